//! List: the entries of a layer stream as [`apply`](crate::apply) reads them — the same
//! decompression (gzip or zstd detected by magic bytes), the same Go-compatible tar reader and
//! the same errors for bad input — without writing anything.

use std::io::{self, BufRead, BufReader, Read};

use crate::compression;
use crate::error::{Error, Result};
use crate::resolve::{clean, split};
use crate::tar::pax::key::XATTR_PREFIX;
use crate::tar::TarReader;
use crate::{WHITEOUT_OPAQUE, WHITEOUT_PREFIX};

pub use crate::tar::reader::{EntryHeader, Nanos};

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
pub fn list<R: Read>(input: R, mut each: impl FnMut(&EntryHeader) -> Result<()>) -> Result<Listed> {
    let decoded = DecoderErrors {
        inner: compression::decompress(input)?,
    };
    let mut tr = TarReader::new(BufReader::with_capacity(256 * 1024, decoded));
    let mut entries = 0u64;
    while let Some(hdr) = tr.next_entry()? {
        entries += 1;
        each(&hdr)?;
    }
    // Trailing bytes after the archive are decompressed as apply does.
    let r = tr.get_mut();
    loop {
        let n = r
            .fill_buf()
            .map_err(|e| Error::from_io("read layer", e))?
            .len();
        if n == 0 {
            return Ok(Listed { entries });
        }
        r.consume(n);
    }
}

/// The decoder's errors, as apply's decoder stage reports them (carried through the tar
/// reader unchanged), so `ls` fails exactly as `apply` does.
struct DecoderErrors<R> {
    inner: R,
}

impl<R: Read> Read for DecoderErrors<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).map_err(|e| {
            if e.kind() == io::ErrorKind::Interrupted {
                e
            } else {
                compression::decode_error(e).into_io()
            }
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

impl Whiteout {
    /// Whether the applier takes `hdr` as a whiteout (by its cleaned base name, whatever its
    /// type, as containerd does).
    pub fn of(hdr: &EntryHeader) -> Option<Whiteout> {
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
pub fn xattr_names(hdr: &EntryHeader) -> impl Iterator<Item = &[u8]> {
    hdr.pax.keys().filter_map(|k| k.strip_prefix(XATTR_PREFIX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str) -> EntryHeader {
        EntryHeader {
            name: name.as_bytes().to_vec(),
            ..EntryHeader::default()
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
