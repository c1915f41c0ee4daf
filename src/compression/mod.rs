//! Layer compression: [`Compression`] (what compare writes), [`decode`] (what apply reads:
//! detected by magic bytes), and [`encode`] (the writer threads of compare: plain and zstd in
//! order, gzip in parallel chunks as pigz does, byte-identical whatever the thread count);
//! [`isal`] is ISA-L's gzip (the inflate apply uses, the deflate of `GzipIsal`).

pub(crate) mod decode;
pub(crate) mod encode;
pub(crate) mod isal;

use crate::error::{Error, Result};
use crate::{MEDIA_TYPE_TAR, MEDIA_TYPE_TAR_GZIP, MEDIA_TYPE_TAR_ZSTD};

pub(crate) use decode::{decode_error, decompress, decompress_buffered};

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
    /// gzip written by ISA-L's deflate at its level 1..=3 (feature `isal`): an opt-in for
    /// size against time: on GOROOT a sixth of level 6's deflate CPU and 16% larger. Same media
    /// type; the bytes may differ from one kind of CPU to another.
    GzipIsal {
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
            Compression::Gzip { .. } | Compression::GzipIsal { .. } => MEDIA_TYPE_TAR_GZIP,
            Compression::Zstd { .. } => MEDIA_TYPE_TAR_ZSTD,
        }
    }

    /// Reject levels the encoders do not accept.
    pub fn validate(&self) -> Result<()> {
        match *self {
            Compression::Gzip { level } if level > 9 => Err(Error::InvalidArgument(format!(
                "gzip level {level} is not in 0..=9"
            ))),
            Compression::GzipIsal { .. } if !isal::AVAILABLE => Err(Error::InvalidArgument(
                "ISA-L is not built into this library".into(),
            )),
            Compression::GzipIsal { level } if !isal::DEFLATE_LEVELS.contains(&level) => Err(
                Error::InvalidArgument(format!("ISA-L gzip level {level} is not in 1..=3")),
            ),
            Compression::Zstd { level } if !zstd::compression_level_range().contains(&level) => {
                Err(Error::InvalidArgument(format!(
                    "zstd level {level} is out of range"
                )))
            }
            _ => Ok(()),
        }
    }
}
