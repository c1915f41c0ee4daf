//! Apply: one OCI layer stream (tar, gzip or zstd) unpacked onto a root directory with
//! containerd's `archive.Apply` semantics (docs/containerd.md §3).
//!
//! - [`pipeline`]: the threads (input reader, decoder, hasher) around the unpacker;
//! - [`unpacker`]: one tar entry at a time onto the root (containerd's `createTarFile`);
//! - [`whiteouts`]: `.wh.` entries, removed, turned into overlay whiteouts or kept as files
//!   for aufs (containerd's `convertWhiteout`);
//! - [`parents`]: missing parent directories (containerd's `mkparent`);
//! - [`metadata`]: owner, xattrs, mode and times of an entry;
//! - [`workers`]: regular files made on worker threads, committed in stream order
//!   (docs/parallel-unpack.md);
//! - [`remove`] and [`xattrs`]: the fd-relative `os.RemoveAll` and xattr reads they use.

mod metadata;
mod names;
mod parents;
mod pipeline;
mod remove;
mod unpacker;
mod whiteouts;
mod workers;
mod xattrs;

use std::io::Read;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, Mode, OFlags};

use crate::control::{self, CancelToken, Progress};
use crate::error::{Error, Result};
use crate::idmap::IdMaps;
#[cfg(doc)]
use crate::overlay_forms::OverlayXattrs;
use crate::resolve::{Resolver, Root};
use crate::sys::errno;
use unpacker::Unpacker;

/// How whiteout entries become changes in the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhiteoutMode {
    /// Delete what they name (a plain directory as the root).
    #[default]
    Remove,
    /// Write overlayfs whiteouts: 0/0 character devices and `trusted.overlay.opaque=y`
    /// (the root is an overlay upperdir); see [`OverlayXattrsChoice`] and [`OverlayWhiteoutForm`]
    /// for the rootless forms.
    Overlay,
    /// Write them as the plain files the layer names, `.wh.NAME` and `.wh..wh..opq` (the root
    /// is an aufs rw branch: aufs reads its whiteouts from the branch). containerd 1.x's
    /// `AufsConvertWhiteout`.
    Aufs,
}

/// Which xattr namespace ([`OverlayXattrs`]) overlay-mode whiteouts use: a fixed one, or
/// chosen by where the apply runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OverlayXattrsChoice {
    /// `user` inside a user namespace (where `trusted.*` cannot be set and overlayfs is
    /// mounted with `userxattr`), else `trusted` (containerd's).
    #[default]
    Auto,
    Trusted,
    /// For an upperdir mounted with `userxattr` (rootless).
    User,
}

/// How overlay-mode whiteouts of single names are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OverlayWhiteoutForm {
    /// A 0/0 character device (containerd's), or xattr whiteouts if mknod of one is refused
    /// (kernels before 5.8 refuse it in a user namespace).
    #[default]
    Auto,
    /// A 0/0 character device: honoured in upper and lower layers.
    CharDevice,
    /// A zero-size file with `NS.overlay.whiteout`, its directory marked
    /// `NS.overlay.opaque=x`: honoured (kernel 6.7+) in lower layers only, which is what an
    /// unpacked snapshot becomes once committed.
    Xattr,
}

/// What happens to block and character device entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceNodes {
    /// containerd's: skipped inside a user namespace (where mknod refuses them), else created,
    /// and a refused mknod is an error.
    #[default]
    Auto,
    /// Created everywhere; a refused mknod is an error saying so.
    Create,
    /// Created where the kernel allows it, skipped where mknod is refused (EPERM), as GNU
    /// tar and umoci do when unprivileged.
    SkipRefused,
}

/// Options of [`apply`].
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    pub whiteouts: WhiteoutMode,
    /// Overlay lowerdirs or aufs ro branches, top first: a missing parent directory takes its
    /// owner, mode, times and non-`trusted.*` xattrs from the first of these that has it.
    pub parents: Vec<PathBuf>,
    /// lchown entries to the uid/gid in the layer (containerd's default).
    pub same_owner: bool,
    /// Map the layer's owners (container IDs) to the owners given on disk (host IDs), in the
    /// same lchown; the default (empty maps) sets them unchanged, as containerd.
    pub id_maps: IdMaps,
    /// An lchown the kernel refuses (an ID not mapped in this user namespace: EINVAL, or
    /// EPERM unprivileged) is skipped, the entry keeping the applier's owner, instead of
    /// failing the apply (containers/storage's `ignore_chown_errors`).
    pub ignore_chown_errors: bool,
    pub devices: DeviceNodes,
    /// Overlay mode: the xattr namespace of opaque dirs and xattr whiteouts.
    pub overlay_xattrs: OverlayXattrsChoice,
    /// Overlay mode: the form of single-name whiteouts.
    pub overlay_whiteout: OverlayWhiteoutForm,
    /// syncfs the root's filesystem when done.
    pub sync_fs: bool,
    /// Threads that unpack: 1 = the unpacker alone (containerd's order, one entry at a time);
    /// N > 1 = N workers (at most 64) make regular files in parallel, each committed in stream
    /// order, so the tree and the first error are those of 1 (docs/parallel-unpack.md); 0 =
    /// the default: `LAYERDIFF_UNPACK_THREADS` from the environment if set, else 1 (more
    /// threads gained too little on the 2-core machine it was measured on).
    pub unpack_threads: usize,
    pub cancel: Option<CancelToken>,
    /// Called with the number of input (possibly compressed) bytes consumed so far.
    pub progress: Option<Progress>,
    /// `sha256:...` the uncompressed stream must hash to (the layer's diffID), checked once it
    /// has been read whole: on a mismatch apply fails, and the root may be partly written by
    /// then (as containerd's unpacker finds out only after applying).
    pub expected_diff_id: Option<String>,
    /// How paths are resolved in the root. Not a knob for callers (both ways are equally
    /// safe; the default picks the fast one): it lets the tests run the pre-5.6 fallback on
    /// any kernel, each apply on its own, hence hidden.
    #[doc(hidden)]
    pub resolver: Resolver,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            whiteouts: WhiteoutMode::Remove,
            parents: Vec::new(),
            same_owner: true,
            id_maps: IdMaps::default(),
            ignore_chown_errors: false,
            devices: DeviceNodes::Auto,
            overlay_xattrs: OverlayXattrsChoice::Auto,
            overlay_whiteout: OverlayWhiteoutForm::Auto,
            sync_fs: false,
            unpack_threads: 0,
            cancel: None,
            progress: None,
            expected_diff_id: None,
            resolver: Resolver::Auto,
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
///
/// The input is read on one thread and decompressed (gzip/zstd detected by magic bytes) on
/// another, which hands buffers to this one over a bounded channel, so inflating overlaps
/// with writing files; a fourth thread hashes each buffer once this one is done with it.
pub fn apply<R: Read + Send>(root: &Path, input: R, opts: &ApplyOptions) -> Result<Applied> {
    control::check(opts.cancel.as_ref())?;
    if let Some(want) = &opts.expected_diff_id {
        crate::digest::validate_sha256(want)?;
    }
    let root_dir =
        Root::open(root, opts.resolver).map_err(|e| Error::path("open root", root, e))?;
    let mut lowers = Vec::with_capacity(opts.parents.len());
    for p in &opts.parents {
        lowers.push(
            Root::open(p, opts.resolver).map_err(|e| Error::path("open parent directory", p, e))?,
        );
    }

    let (digest, size) = pipeline::run(
        input,
        opts.progress.clone(),
        opts.cancel.clone(),
        |stream| Unpacker::new(root, &root_dir, lowers, opts)?.run(stream),
    )?;
    if let Some(want) = opts
        .expected_diff_id
        .as_ref()
        .filter(|&want| *want != digest)
    {
        return Err(Error::InvalidArchive(format!(
            "layer diffID is {digest}, not the expected {want} ({} may be partly written)",
            root.display()
        )));
    }
    if opts.sync_fs {
        let fd = rfs::open(
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::path("open root for syncfs", root, errno(e)))?;
        rfs::syncfs(&fd).map_err(|e| Error::path("syncfs", root, errno(e)))?;
    }
    Ok(Applied { digest, size })
}
