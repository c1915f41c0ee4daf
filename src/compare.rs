//! Compare: two directory trees in, one OCI layer stream out.

use std::io::Write;
use std::path::Path;

use crate::compression::Compression;
use crate::control::{CancelToken, Progress};
use crate::error::{Error, Result};

/// Options of [`compare`]. The default is gzip at level 6, no epoch, no hooks.
#[derive(Debug, Clone, Default)]
pub struct CompareOptions {
    pub compression: Compression,
    /// SOURCE_DATE_EPOCH in seconds: later mtimes are clamped to it (whiteouts keep 0).
    pub source_date_epoch: Option<i64>,
    pub cancel: Option<CancelToken>,
    /// Called with the number of uncompressed tar bytes produced so far.
    pub progress: Option<Progress>,
}

/// What [`compare`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diff {
    /// OCI media type of the written stream (depends on the compression).
    pub media_type: &'static str,
    /// `sha256:...` of the bytes written to the output.
    pub digest: String,
    /// Number of bytes written to the output.
    pub size: u64,
    /// `sha256:...` of the uncompressed tar (the diffID).
    pub diff_id: String,
    /// Size of the uncompressed tar.
    pub uncompressed_size: u64,
}

/// Walk `lower` and `upper`, and write to `out` the layer that turns lower into upper,
/// byte-identical (uncompressed) to containerd's `archive.WriteDiff`.
pub fn compare<W: Write + Send>(
    lower: &Path,
    upper: &Path,
    out: W,
    opts: &CompareOptions,
) -> Result<Diff> {
    let _ = (lower, upper, out, opts);
    Err(Error::NotImplemented("compare".into()))
}
