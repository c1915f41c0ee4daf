//! List: the entries of a layer stream as [`apply`](crate::apply) reads them — the same
//! decompression (gzip or zstd detected by magic bytes), the same Go-compatible tar reader and
//! the same errors for bad input — without writing anything.

use std::cell::RefCell;
use std::io::{self, BufRead, BufReader, Read};
use std::rc::Rc;

use crate::compression;
use crate::error::{Error, Result};
use crate::resolve::{clean, split};
use crate::tarread::TarReader;

pub use crate::tarread::{Header, Nanos};

/// What [`list`] read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Number of entries passed to the callback.
    pub entries: u64,
}

/// Read the layer from `input` and call `each` with every entry, in stream order. Entries
/// are what Go's `tar.Reader.Next` returns (PAX and GNU long-name headers merged into the
/// entry they describe; global PAX headers returned as entries of type `g`). The stream is
/// read to its end after the archive, as apply does, so trailing corruption fails here too.
/// An error from `each` stops the listing and is returned.
pub fn list<R: Read>(input: R, mut each: impl FnMut(&Header) -> Result<()>) -> Result<Listed> {
    let decoder_error = Rc::new(RefCell::new(None));
    let decoded = DecoderErrors {
        inner: compression::decompress(input)?,
        first_error: decoder_error.clone(),
    };
    let mut tr = TarReader::new(BufReader::with_capacity(256 * 1024, decoded));
    let mut entries = 0u64;
    let mut stopped = None;
    let res = (|| {
        while let Some(hdr) = tr.next_entry()? {
            entries += 1;
            if let Err(e) = each(&hdr) {
                stopped = Some(e);
                return Ok(());
            }
        }
        // Trailing bytes after the archive are decompressed as apply does.
        let r = tr.get_mut();
        loop {
            let n = r.fill_buf().map_err(|e| Error::io("read layer", e))?.len();
            if n == 0 {
                return Ok(());
            }
            r.consume(n);
        }
    })();
    // As in apply, the decoder's own error explains a tar stream that broke off.
    if let Err(e) = res {
        return Err(decoder_error.take().unwrap_or(e));
    }
    match stopped {
        Some(e) => Err(e),
        None => Ok(Listed { entries }),
    }
}

/// Turns the decoder's read errors into what apply reports for them, and keeps the first.
struct DecoderErrors<R> {
    inner: R,
    first_error: Rc<RefCell<Option<Error>>>,
}

impl<R: Read> Read for DecoderErrors<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).map_err(|e| {
            if e.kind() == io::ErrorKind::Interrupted {
                return e;
            }
            // Anything the decoders report that is not a system error is bad data (as apply's
            // decoder thread classifies it).
            let bad_data = e.kind() == io::ErrorKind::UnexpectedEof || e.raw_os_error().is_none();
            let msg = format!("decompress layer: {e}");
            let err = if bad_data {
                Error::InvalidArchive(msg.clone())
            } else {
                Error::io("read layer", io::Error::new(e.kind(), e.to_string()))
            };
            self.first_error.borrow_mut().get_or_insert(err);
            io::Error::new(io::ErrorKind::InvalidData, msg)
        })
    }
}

/// What a whiteout entry asks of the applier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whiteout {
    /// `.wh.NAME`: remove `NAME` from the directory.
    Remove,
    /// `.wh..wh..opq`: hide everything the lower layers have in the directory.
    Opaque,
}

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const WHITEOUT_OPAQUE: &[u8] = b".wh..wh..opq";
const XATTR_PREFIX: &[u8] = b"SCHILY.xattr.";

impl Whiteout {
    /// Whether the applier takes `hdr` as a whiteout (by its cleaned base name, whatever its
    /// type, as containerd does).
    pub fn of(hdr: &Header) -> Option<Whiteout> {
        let name = clean(&hdr.name);
        let (_, base) = split(&name);
        if base == WHITEOUT_OPAQUE {
            Some(Whiteout::Opaque)
        } else if base.starts_with(WHITEOUT_PREFIX) {
            Some(Whiteout::Remove)
        } else {
            None
        }
    }
}

/// The names of the extended attributes an entry carries (`SCHILY.xattr.*` PAX records).
pub fn xattr_names(hdr: &Header) -> impl Iterator<Item = &[u8]> {
    hdr.pax.keys().filter_map(|k| k.strip_prefix(XATTR_PREFIX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str) -> Header {
        Header {
            name: name.as_bytes().to_vec(),
            ..Header::default()
        }
    }

    #[test]
    fn whiteouts_by_cleaned_base_name() {
        assert_eq!(Whiteout::of(&header("a/.wh.b")), Some(Whiteout::Remove));
        assert_eq!(
            Whiteout::of(&header("./a/.wh..wh..opq")),
            Some(Whiteout::Opaque)
        );
        assert_eq!(
            Whiteout::of(&header(".wh.x/../.wh.y")),
            Some(Whiteout::Remove)
        );
        assert_eq!(Whiteout::of(&header(".wh.x/y")), None);
        assert_eq!(Whiteout::of(&header("a/b.wh.c")), None);
    }
}
