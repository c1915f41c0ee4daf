//! layerdiff: compute and apply OCI image layer diffs, byte-identical to containerd.
//!
//! The core knows nothing of containerd, mounts or content stores: [`compare`] turns two
//! directories into a layer stream written to any `Write`, and [`apply`] turns a layer stream
//! plus a directory into a changed directory. The C ABI (`capi`) and the Go package are thin
//! front doors onto these two functions.
//!
//! A stalled input or output: [`compare`] and [`apply`] return only once their threads are
//! done, so one blocked in a `Read` or `Write` of the caller's is waited for, also after a
//! cancel or an error (an arbitrary `Read` or `Write` cannot be interrupted). A descriptor
//! wrapped in a [`CancellableFd`] is not: its reads and writes wake when its token is
//! cancelled, and a token made by [`CancelToken::for_call`] is cancelled by the call itself
//! when it fails, so the call returns its own error at once. The C ABI, and so Go, and the
//! CLI wrap their descriptors so, always: a peer that neither writes (reads) nor closes never
//! delays an error or a cancel.

// Only the C ABI may hold `unsafe` (as in libpathrs); everything else is safe Rust.
#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

mod apply;
#[allow(unsafe_code)]
pub mod capi;
mod change_writer;
mod compare;
mod compression;
mod control;
mod digest;
mod error;
mod idmap;
mod list;
mod overlay;
pub mod overlay_forms;
mod resolve;
mod sys;
mod tar;
mod walk;
mod xattrs;

pub use apply::{
    apply, Applied, ApplyOptions, DeviceNodes, OverlayWhiteoutForm, OverlayXattrsChoice,
    WhiteoutMode,
};
pub use compare::{compare, CompareOptions, Diff};
pub use compression::{Compression, GZIP_DEFAULT_LEVEL, ZSTD_DEFAULT_LEVEL};
pub use control::{CancelToken, CancellableFd, Progress};
pub use digest::validate_sha256;
pub use error::{Error, ErrorKind, Result};
pub use idmap::{IdMap, IdMaps, IdRange, UnmappedId};
pub use list::{list, xattr_names, EntryHeader, Listed, Nanos, Whiteout};
pub use overlay::compare_upperdir;
pub use overlay_forms::OverlayXattrs;
#[doc(hidden)]
pub use resolve::Resolver;

/// OCI media type of an uncompressed layer.
pub const MEDIA_TYPE_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI media type of a gzip-compressed layer.
pub const MEDIA_TYPE_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI media type of a zstd-compressed layer.
pub const MEDIA_TYPE_TAR_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// The crate version, as exported through `layerdiff_version()`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Name prefix of a whiteout entry (`.wh.NAME` deletes `NAME`), in both directions.
pub(crate) const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// Name of an opaque-directory whiteout (the directory's lower contents are hidden).
pub(crate) const WHITEOUT_OPAQUE: &[u8] = b".wh..wh..opq";
