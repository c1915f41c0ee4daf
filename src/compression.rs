//! Layer compression: none, gzip or zstd on output; detection by magic bytes on input.

use std::io::{self, BufRead, BufReader, Read, Write};

use crate::error::{Error, Result};
use crate::{MEDIA_TYPE_TAR, MEDIA_TYPE_TAR_GZIP, MEDIA_TYPE_TAR_ZSTD};

/// Go's compress/gzip default level, which containerd's walking differ uses.
/// cbindgen:ignore
pub const GZIP_DEFAULT_LEVEL: u32 = 6;
/// zstd level matching klauspost's default ("SpeedDefault" ≈ zstd level 3).
/// cbindgen:ignore
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

/// Like [`decompress`], for input that is already buffered: when its buffer holds the first
/// 10 bytes, the decoders read straight from it (no second buffer, no extra copy).
pub fn decompress_buffered<'a, R: BufRead + 'a>(mut input: R) -> Result<Box<dyn Read + 'a>> {
    let kind = match input.fill_buf() {
        Ok(head) if head.len() >= 10 => detect_bytes(head),
        // A short first buffer (or an interrupted read) is peeked the general way.
        Ok(_) => return decompress(input),
        Err(e) if e.kind() == io::ErrorKind::Interrupted && !crate::error::is_canceled(&e) => {
            return decompress(input)
        }
        Err(e) => return Err(Error::io("read layer", e)),
    };
    Ok(match kind {
        Detected::Tar => Box::new(input),
        Detected::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
        Detected::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(input)
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

/// Size of the chunks of the parallel gzip encoder. Twice pigz's 128 KiB block: each chunk
/// pays for a fresh compressor, priming it with the 32 KiB dictionary and a sync flush, and
/// at 256 KiB that overhead measured ~7% less deflate time with the same output size.
pub(crate) const GZIP_CHUNK: usize = 256 * 1024;
/// Deflate's window: each chunk is compressed with the previous chunk's tail as dictionary.
pub(crate) const DEFLATE_WINDOW: usize = 32 * 1024;

/// The 10-byte gzip header Go's `compress/gzip` writes (no name, no mtime, OS unknown).
pub fn gzip_header(level: u32) -> [u8; 10] {
    let xfl = match level {
        9 => 2,
        1 => 4,
        _ => 0,
    };
    [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255]
}

/// The 8-byte gzip trailer: CRC-32 and length mod 2^32 of the uncompressed data.
pub fn gzip_trailer(crc: &flate2::Crc) -> [u8; 8] {
    let mut t = [0u8; 8];
    t[..4].copy_from_slice(&crc.sum().to_le_bytes());
    t[4..].copy_from_slice(&crc.amount().to_le_bytes());
    t
}

/// Compress one chunk of a pigz-style parallel gzip stream: raw deflate primed with `dict`
/// (the previous 32 KiB of input), ended by a sync flush so that the chunks concatenate into
/// one deflate stream, or by the final block when `last`.
///
/// Each chunk gets a fresh compressor: a reset and reused zlib-rs `Compress` gave output that
/// depended on which chunks that worker had compressed before, so the same tree produced
/// different gzip bytes from run to run (measured: no slower than reuse).
pub fn deflate_chunk(
    level: u32,
    dict: &[u8],
    data: &[u8],
    last: bool,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    use flate2::{FlushCompress, Status};
    let mut compressor = flate2::Compress::new(flate2::Compression::new(level), false);
    let compressor = &mut compressor;
    if !dict.is_empty() {
        compressor.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    out.clear();
    // Room for incompressible data (stored blocks add 5 bytes per 64 KiB), so the buffer is
    // never regrown and copied.
    out.reserve(data.len() + data.len() / 1024 + 1024);
    let mut consumed = 0usize;
    loop {
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity().max(4096));
        }
        let before = compressor.total_in();
        let status = compressor
            .compress_vec(&data[consumed..], out, flush)
            .map_err(io::Error::other)?;
        consumed += (compressor.total_in() - before) as usize;
        let room_left = out.len() < out.capacity();
        match status {
            Status::StreamEnd => return Ok(()),
            _ if !last && consumed == data.len() && room_left => return Ok(()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod encoder_tests {
    use super::*;

    /// Chunks compressed independently with their predecessor as dictionary and concatenated
    /// form one gzip member that a standard decoder reads back.
    #[test]
    fn chunked_deflate_is_one_valid_gzip_member() {
        let mut data = Vec::new();
        let mut x: u32 = 1;
        for i in 0..700_000u32 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            data.push(if i % 3 == 0 {
                (x >> 24) as u8
            } else {
                b"layer"[(i % 5) as usize]
            });
        }
        for level in [0, 1, 6, 9] {
            let mut out = gzip_header(level).to_vec();
            let mut crc = flate2::Crc::new();
            let chunks: Vec<&[u8]> = data.chunks(GZIP_CHUNK).collect();
            let mut buf = Vec::new();
            for (i, chunk) in chunks.iter().enumerate() {
                let dict = if i == 0 {
                    &[][..]
                } else {
                    let prev = chunks[i - 1];
                    &prev[prev.len().saturating_sub(DEFLATE_WINDOW)..]
                };
                deflate_chunk(level, dict, chunk, i + 1 == chunks.len(), &mut buf).unwrap();
                out.extend_from_slice(&buf);
                crc.update(chunk);
            }
            out.extend_from_slice(&gzip_trailer(&crc));
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&out[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data, "level {level}");
        }
    }

    #[test]
    fn empty_last_chunk_still_ends_the_stream() {
        let mut out = gzip_header(6).to_vec();
        let mut buf = Vec::new();
        deflate_chunk(6, &[], b"hello", false, &mut buf).unwrap();
        out.extend_from_slice(&buf);
        deflate_chunk(6, b"hello", b"", true, &mut buf).unwrap();
        out.extend_from_slice(&buf);
        let mut crc = flate2::Crc::new();
        crc.update(b"hello");
        out.extend_from_slice(&gzip_trailer(&crc));
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&out[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, b"hello");
    }
}
