//! Layer compression: none, gzip or zstd on output; detection by magic bytes on input.

use std::io::{self, BufRead, BufReader, Read, Write};

use crate::error::{Error, Result};
use crate::{MEDIA_TYPE_TAR, MEDIA_TYPE_TAR_GZIP, MEDIA_TYPE_TAR_ZSTD};

/// Go's compress/gzip default level, which containerd's walking differ uses.
pub const GZIP_DEFAULT_LEVEL: u32 = 6;
/// zstd level matching klauspost's default ("SpeedDefault" ≈ zstd level 3).
pub const ZSTD_DEFAULT_LEVEL: i32 = 3;

/// How a layer is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    /// gzip at level 0..=9.
    Gzip {
        level: u32,
    },
    /// zstd at level 1..=22 (negative levels are the fast modes).
    Zstd {
        level: i32,
    },
}

impl Default for Compression {
    /// gzip at Go's default level, as containerd's walking differ.
    fn default() -> Self {
        Compression::Gzip {
            level: GZIP_DEFAULT_LEVEL,
        }
    }
}

impl Compression {
    /// The OCI media type of a layer compressed this way.
    pub fn media_type(&self) -> &'static str {
        match self {
            Compression::None => MEDIA_TYPE_TAR,
            Compression::Gzip { .. } => MEDIA_TYPE_TAR_GZIP,
            Compression::Zstd { .. } => MEDIA_TYPE_TAR_ZSTD,
        }
    }

    /// Reject levels the encoders do not accept.
    pub fn validate(&self) -> Result<()> {
        match *self {
            Compression::Gzip { level } if level > 9 => Err(Error::InvalidArgument(format!(
                "gzip level {level} is not in 0..=9"
            ))),
            Compression::Zstd { level } if !zstd::compression_level_range().contains(&level) => {
                Err(Error::InvalidArgument(format!(
                    "zstd level {level} is out of range"
                )))
            }
            _ => Ok(()),
        }
    }
}

/// The format of an input stream, detected from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    Tar,
    Gzip,
    Zstd,
}

/// Detect the compression from the first bytes of a stream (containerd's `DetectCompression`
/// looks at up to 10): gzip `1f 8b 08`, a zstd frame `28 b5 2f fd`, or a zstd skippable frame
/// (magic `0x184D2A5?`, needing 8 bytes); anything else is plain tar.
pub fn detect_bytes(head: &[u8]) -> Detected {
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

/// Detect the compression of a buffered stream by its magic bytes without consuming them
/// (looks only at what the buffer already holds).
pub fn detect<R: BufRead>(r: &mut R) -> io::Result<Detected> {
    let buf = r.fill_buf()?;
    Ok(detect_bytes(buf))
}

/// Wrap `input` in the decoder its first bytes call for. Gzip input may be multi-member, as
/// Go's gzip reader accepts; zstd may hold several frames.
pub fn decompress<'a, R: Read + 'a>(mut input: R) -> Result<Box<dyn Read + 'a>> {
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
    let buffered = BufReader::with_capacity(256 * 1024, chained);
    Ok(match kind {
        Detected::Tar => Box::new(buffered),
        Detected::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Detected::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(buffered)
                .map_err(|e| Error::io("start zstd decoder", e))?,
        ),
    })
}

/// A compressing writer; `finish` flushes the trailer and returns the inner writer.
pub enum Encoder<W: Write> {
    None(W),
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Encoder<W> {
    pub fn new(inner: W, compression: Compression) -> Result<Self> {
        compression.validate()?;
        Ok(match compression {
            Compression::None => Encoder::None(inner),
            Compression::Gzip { level } => Encoder::Gzip(flate2::write::GzEncoder::new(
                inner,
                flate2::Compression::new(level),
            )),
            Compression::Zstd { level } => Encoder::Zstd(
                zstd::stream::write::Encoder::new(inner, level)
                    .map_err(|e| Error::io("start zstd encoder", e))?,
            ),
        })
    }

    pub fn finish(self) -> io::Result<W> {
        match self {
            Encoder::None(w) => Ok(w),
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::None(w) => w.write(buf),
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::None(w) => w.flush(),
            Encoder::Gzip(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }
}
