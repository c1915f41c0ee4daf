//! layerdiff: compute and apply OCI image layer diffs, byte-identical to containerd.
//!
//! The core knows nothing of containerd, mounts or content stores: [`compare`] turns two
//! directories into a layer stream written to any `Write`, and [`apply`] turns a layer stream
//! plus a directory into a changed directory. The C ABI (`capi`) and the Go package are thin
//! front doors onto these two functions.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod apply;
pub mod capi;
pub mod compare;
pub mod compression;
pub mod control;
pub mod digest;
pub mod error;
pub mod layer;
pub mod list;
pub mod resolve;
pub mod tarread;
pub mod walk;

pub use apply::{apply, Applied, ApplyOptions, WhiteoutMode};
pub use compare::{compare, CompareOptions, Diff};
pub use compression::Compression;
pub use control::{CancelToken, Progress};
pub use error::{Error, ErrorKind, Result};
pub use list::{list, Listed};

/// OCI media type of an uncompressed layer.
pub const MEDIA_TYPE_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI media type of a gzip-compressed layer.
pub const MEDIA_TYPE_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI media type of a zstd-compressed layer.
pub const MEDIA_TYPE_TAR_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// The crate version, as exported through `layerdiff_version()`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
