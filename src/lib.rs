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

/// What the cargo-fuzz targets in `fuzz/` drive directly (feature `fuzzing`, off by default,
/// so never part of the API): the decoder and tar reader apply reads layers with, and the
/// in-root resolver. Thin wrappers, so the crate's internals stay `pub(crate)`.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    use std::io::{self, BufRead, Read};
    use std::path::Path;

    pub use crate::list::EntryHeader;
    pub use crate::resolve::Resolver;
    use crate::Result;

    /// The decoder apply's decoder thread runs: gzip/zstd/plain detected by magic bytes.
    pub fn decompress<'a, R: BufRead + 'a>(input: R) -> Result<Box<dyn Read + 'a>> {
        crate::compression::decompress_buffered(input)
    }

    /// The Go-compatible tar reader apply unpacks with (sparse maps expanded).
    pub struct TarReader<R>(crate::tar::TarReader<R>);

    impl<R: BufRead> TarReader<R> {
        pub fn new(r: R) -> Self {
            TarReader(crate::tar::TarReader::new(r))
        }

        /// The next entry, or `None` at the end of the archive.
        pub fn next_entry(&mut self) -> Result<Option<EntryHeader>> {
            self.0.next_entry()
        }

        /// Hand the next chunk of the current entry's data to `f`; 0 at its end.
        pub fn read_chunk(&mut self, f: impl FnOnce(&[u8]) -> Result<()>) -> Result<usize> {
            self.0.read_chunk(f)
        }
    }

    /// continuity's `fs.RootPath` over a root opened with either [`Resolver`].
    pub struct Root(crate::resolve::Root);

    impl Root {
        pub fn open(path: &Path, resolver: Resolver) -> io::Result<Root> {
            crate::resolve::Root::open(path, resolver).map(Root)
        }

        /// `path` resolved in the root: clean components, and how many symlinks were followed.
        pub fn root_path(&self, path: &[u8]) -> io::Result<(Vec<Vec<u8>>, usize)> {
            self.0.root_path(path)
        }
    }
}

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
