//! Apply: one OCI layer stream (tar, gzip or zstd) unpacked onto a root directory.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::control::{CancelToken, Progress};
use crate::error::{Error, Result};

/// How whiteout entries become changes in the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhiteoutMode {
    /// Delete what they name (a plain directory as the root).
    #[default]
    Remove,
    /// Write overlayfs whiteouts: 0/0 character devices and `trusted.overlay.opaque=y`
    /// (the root is an overlay upperdir).
    Overlay,
}

/// Options of [`apply`].
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    pub whiteouts: WhiteoutMode,
    /// Overlay lowerdirs, top first: a missing parent directory takes its owner, mode, times
    /// and non-`trusted.*` xattrs from the first of these that has it.
    pub parents: Vec<PathBuf>,
    /// lchown entries to the uid/gid in the layer (containerd's default).
    pub same_owner: bool,
    /// syncfs the root's filesystem when done.
    pub sync_fs: bool,
    pub cancel: Option<CancelToken>,
    /// Called with the number of input (possibly compressed) bytes consumed so far.
    pub progress: Option<Progress>,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            whiteouts: WhiteoutMode::Remove,
            parents: Vec::new(),
            same_owner: true,
            sync_fs: false,
            cancel: None,
            progress: None,
        }
    }
}

/// What [`apply`] read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// `sha256:...` of the uncompressed stream (trailing bytes included).
    pub digest: String,
    /// Size of the uncompressed stream.
    pub size: u64,
}

impl Applied {
    /// The media type of the returned descriptor: always plain tar.
    pub const MEDIA_TYPE: &'static str = crate::MEDIA_TYPE_TAR;
}

/// Unpack the layer read from `input` onto `root` with containerd's `archive.Apply` semantics,
/// never touching anything outside `root`.
pub fn apply<R: Read + Send>(root: &Path, input: R, opts: &ApplyOptions) -> Result<Applied> {
    let _ = (root, input, opts);
    Err(Error::NotImplemented("apply".into()))
}
