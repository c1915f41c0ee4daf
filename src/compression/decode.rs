//! Input side: the compression of a layer stream detected from its first bytes (as
//! containerd's `DetectCompression`), and the matching decoder.

use std::io::{self, BufRead, BufReader, Read};

use crate::error::{Error, Result};

/// The format of an input stream, detected from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Detected {
    Tar,
    Gzip,
    Zstd,
}

/// Detect the compression from the first bytes of a stream (containerd's `DetectCompression`
/// looks at up to 10): gzip `1f 8b 08`, a zstd frame `28 b5 2f fd`, or a zstd skippable frame
/// (magic `0x184D2A5?`, needing 8 bytes); anything else is plain tar.
pub(crate) fn detect_bytes(head: &[u8]) -> Detected {
    if head.starts_with(&[0x1f, 0x8b, 0x08]) {
        Detected::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || (head.len() >= 8
            && u32::from_le_bytes([head[0], head[1], head[2], head[3]]) & 0xFFFF_FFF0
                == 0x184D_2A50)
    {
        Detected::Zstd
    } else {
        Detected::Tar
    }
}

/// Wrap `input` in the decoder its first bytes call for. Gzip input may be multi-member, as
/// Go's gzip reader accepts; zstd may hold several frames.
pub(crate) fn decompress<'a, R: Read + 'a>(mut input: R) -> Result<Box<dyn Read + 'a>> {
    // Peek up to 10 bytes even from a reader that returns short reads (pipes), as Go's Peek does.
    let mut head = [0u8; 10];
    let mut n = 0;
    while n < head.len() {
        match input.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted && !crate::error::is_canceled(&e) => {}
            Err(e) => return Err(Error::io("read layer", e)),
        }
    }
    let kind = detect_bytes(&head[..n]);
    let chained = io::Cursor::new(head[..n].to_vec()).chain(input);
    decoder(kind, BufReader::with_capacity(256 * 1024, chained))
}

/// Like [`decompress`], for input that is already buffered: when its buffer holds the first
/// 10 bytes, the decoders read straight from it (no second buffer, no extra copy).
pub(crate) fn decompress_buffered<'a, R: BufRead + 'a>(mut input: R) -> Result<Box<dyn Read + 'a>> {
    let kind = match input.fill_buf() {
        Ok(head) if head.len() >= 10 => detect_bytes(head),
        // A short first buffer (or an interrupted read) is peeked the general way.
        Ok(_) => return decompress(input),
        Err(e) if e.kind() == io::ErrorKind::Interrupted && !crate::error::is_canceled(&e) => {
            return decompress(input)
        }
        Err(e) => return Err(Error::io("read layer", e)),
    };
    decoder(kind, input)
}

/// The largest zstd window accepted: 2^29 bytes, klauspost/compress's default maximum.
const ZSTD_WINDOW_LOG_MAX: u32 = 29;

/// The decoder for `kind` reading from `input`.
fn decoder<'a, R: BufRead + 'a>(kind: Detected, input: R) -> Result<Box<dyn Read + 'a>> {
    Ok(match kind {
        Detected::Tar => Box::new(input),
        Detected::Gzip => super::isal::gzip_decoder(input),
        Detected::Zstd => {
            let mut d = zstd::stream::read::Decoder::with_buffer(input)
                .map_err(|e| Error::io("start zstd decoder", e))?;
            // containerd's decoder (klauspost/compress) takes windows up to 512 MiB
            // (`zstd --long=29`); libzstd's default stops at 128 MiB. The window is allocated
            // as the frame needs it, so memory stays bounded by that 512 MiB, as there.
            d.window_log_max(ZSTD_WINDOW_LOG_MAX)
                .map_err(|e| Error::io("start zstd decoder", e))?;
            Box::new(d)
        }
    })
}

/// What a failed read of the decompressed stream means: anything the decoders report that is
/// not a system error is bad data.
pub(crate) fn decode_error(e: io::Error) -> Error {
    // An error the input stage passed through the decoder (a cancel, a failed read) keeps its
    // own kind: only what the decoder itself reports is bad data.
    if e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
        return Error::from_io("read layer", e);
    }
    let msg = format!("decompress layer: {e}");
    if e.kind() == io::ErrorKind::UnexpectedEof
        || e.raw_os_error().is_none()
        || e.kind() == io::ErrorKind::InvalidInput
    {
        Error::InvalidArchive(msg)
    } else {
        Error::io("read layer", e)
    }
}

/// Go's gzip reader keeps a member's FNAME and FCOMMENT in a 512-byte buffer, NUL included,
/// and refuses a longer one (`gzip: invalid header`); containerd's built-in decoder is Go's.
/// flate2 takes up to 64 KiB, so each member's header is checked as it is read.
pub(super) const GZIP_STRING_MAX: usize = 511;

/// The error for a FNAME or FCOMMENT over [`GZIP_STRING_MAX`], on both gzip paths.
pub(super) fn go_string_too_long() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "gzip: invalid header (FNAME or FCOMMENT over 511 bytes)",
    )
}

/// The gzip decoder without ISA-L (and the reference its tests compare with): flate2's
/// multi-member decoder over zlib-rs, with Go's header limit.
#[cfg_attr(
    all(
        feature = "isal",
        any(target_arch = "x86_64", target_arch = "aarch64"),
        not(test)
    ),
    allow(dead_code)
)]
pub(super) fn zlib_gzip_decoder<'a, R: BufRead + 'a>(input: R) -> Box<dyn Read + 'a> {
    Box::new(GoGzipHeaders(flate2::bufread::MultiGzDecoder::new(input)))
}

struct GoGzipHeaders<R>(flate2::bufread::MultiGzDecoder<R>);

impl<R: BufRead> Read for GoGzipHeaders<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.0.read(buf)?;
        if let Some(h) = self.0.header() {
            let too_long = |s: Option<&[u8]>| s.is_some_and(|s| s.len() > GZIP_STRING_MAX);
            if too_long(h.filename()) || too_long(h.comment()) {
                return Err(go_string_too_long());
            }
        }
        Ok(n)
    }
}
