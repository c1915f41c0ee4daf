//! The extern "C" layer: thin shims over the core. All `unsafe` of the crate lives here.
//!
//! Every entry point checks its pointers, converts the plain C option structs into the core's
//! options, calls [`crate::compare`] / [`crate::apply`], and catches panics so that none crosses
//! into C. File descriptors are borrowed: they are duplicated (`F_DUPFD_CLOEXEC`) and the
//! duplicate is what the core reads or writes, so the caller's descriptor is never closed and
//! its file offset advances as the layer is read or written.
//!
//! The C names (`layerdiff_*`, lower case) are kept in Rust so the header reads the same.
#![allow(non_camel_case_types)]

mod error;

pub use error::*;

use std::ffi::{c_char, c_int, c_void, CStr};
use std::fs::File;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::compression::{GZIP_DEFAULT_LEVEL, ZSTD_DEFAULT_LEVEL};
use crate::{ApplyOptions, CancelToken, CompareOptions, Compression, Progress, WhiteoutMode};

/// Compress the layer with gzip (the zero value, as containerd's walking differ).
pub const LAYERDIFF_COMPRESSION_GZIP: u32 = 0;
/// Write the layer uncompressed.
pub const LAYERDIFF_COMPRESSION_NONE: u32 = 1;
/// Compress the layer with zstd.
pub const LAYERDIFF_COMPRESSION_ZSTD: u32 = 2;

/// Whiteouts delete what they name (the root is a plain directory). The zero value.
pub const LAYERDIFF_WHITEOUTS_REMOVE: u32 = 0;
/// Whiteouts become overlayfs whiteouts (0/0 character devices, `trusted.overlay.opaque=y`):
/// the root is an overlay upperdir.
pub const LAYERDIFF_WHITEOUTS_OVERLAY: u32 = 1;

/// A cancellation handle. Create it with `layerdiff_cancel_new`, pass it in the options of any
/// number of calls, trigger it from any thread with `layerdiff_cancel_trigger` (those calls then
/// return a LAYERDIFF_ERROR_CANCELED error promptly), release it with `layerdiff_cancel_free`.
/// A triggered handle stays triggered.
pub struct layerdiff_cancel {
    token: CancelToken,
}

/// A progress callback: called with a running byte count, possibly from a worker thread, never
/// after the call that was given it has returned. For compare the count is the uncompressed tar
/// bytes produced so far, for apply the input bytes consumed so far. `ctx` is the
/// `progress_ctx` of the options, passed through untouched. The callback must not unwind
/// (C++ exceptions, longjmp) through layerdiff.
pub type layerdiff_progress_fn = Option<unsafe extern "C" fn(ctx: *mut c_void, bytes: u64)>;

/// Options of `layerdiff_compare`. The all-zero value (or a NULL pointer) means: gzip at level
/// 6, no source-date-epoch, no cancellation, no progress.
#[repr(C)]
pub struct layerdiff_compare_options {
    /// LAYERDIFF_COMPRESSION_*; 0 = gzip.
    pub compression: u32,
    /// Compression level; 0 = the algorithm's default (gzip 6, zstd 3). gzip takes 1..=9, zstd
    /// its own range (negative levels are the fast modes); uncompressed output takes only 0.
    pub level: i32,
    /// Whether `source_date_epoch` is set; false (zero) = no epoch.
    pub has_source_date_epoch: bool,
    /// SOURCE_DATE_EPOCH in seconds: mtimes later than this are clamped to it.
    pub source_date_epoch: i64,
    /// Cancellation handle, or NULL.
    pub cancel: *const layerdiff_cancel,
    /// Progress callback (uncompressed tar bytes produced), or NULL.
    pub progress: layerdiff_progress_fn,
    /// Passed to `progress` as its first argument.
    pub progress_ctx: *mut c_void,
}

/// What `layerdiff_compare` wrote.
#[repr(C)]
pub struct layerdiff_compare_result {
    /// OCI media type of the written layer, NUL-terminated
    /// (application/vnd.oci.image.layer.v1.tar, ...tar+gzip or ...tar+zstd).
    pub media_type: [c_char; 64],
    /// "sha256:<64 hex>" of the bytes written to the fd, NUL-terminated.
    pub digest: [c_char; 72],
    /// Number of bytes written to the fd.
    pub size: u64,
    /// "sha256:<64 hex>" of the uncompressed tar (the diffID), NUL-terminated.
    pub diff_id: [c_char; 72],
    /// Size of the uncompressed tar.
    pub uncompressed_size: u64,
}

/// Options of `layerdiff_apply`. The all-zero value (or a NULL pointer) means: remove
/// whiteouts, no parents, lchown entries to the layer's uid/gid (like containerd), no syncfs,
/// no cancellation, no progress.
#[repr(C)]
pub struct layerdiff_apply_options {
    /// LAYERDIFF_WHITEOUTS_*; 0 = remove.
    pub whiteouts: u32,
    /// Overlay lowerdirs, top first: a parent directory the layer needs but the root lacks takes
    /// its owner, mode, times and xattrs from the first of these that has it. NUL-terminated
    /// paths; may be NULL when `parents_len` is 0. Read only during the call.
    pub parents: *const *const c_char,
    /// Number of entries in `parents`.
    pub parents_len: usize,
    /// true = do not lchown entries to the layer's uid/gid; false (zero) = do, like containerd.
    pub no_same_owner: bool,
    /// true = syncfs the root's filesystem at the end.
    pub sync_fs: bool,
    /// Cancellation handle, or NULL.
    pub cancel: *const layerdiff_cancel,
    /// Progress callback (input bytes consumed), or NULL.
    pub progress: layerdiff_progress_fn,
    /// Passed to `progress` as its first argument.
    pub progress_ctx: *mut c_void,
}

/// What `layerdiff_apply` read.
#[repr(C)]
pub struct layerdiff_apply_result {
    /// Always "application/vnd.oci.image.layer.v1.tar", NUL-terminated.
    pub media_type: [c_char; 64],
    /// "sha256:<64 hex>" of the uncompressed stream, NUL-terminated.
    pub digest: [c_char; 72],
    /// Size of the uncompressed stream.
    pub size: u64,
}

type CallResult = Result<(), layerdiff_error>;

/// A C callback and its context, callable from any thread.
struct CProgress {
    callback: unsafe extern "C" fn(*mut c_void, u64),
    ctx: *mut c_void,
}

// SAFETY: the C contract (see `layerdiff_progress_fn`) makes the callback and its context
// callable from any thread while the call runs; layerdiff does not touch `ctx` itself.
unsafe impl Send for CProgress {}
// SAFETY: as above; the core calls the callback from one thread at a time or the C side
// synchronizes, as documented.
unsafe impl Sync for CProgress {}

impl CProgress {
    fn report(&self, bytes: u64) {
        // SAFETY: the caller gave a valid function and the context it expects.
        unsafe { (self.callback)(self.ctx, bytes) }
    }
}

fn progress_hook(callback: layerdiff_progress_fn, ctx: *mut c_void) -> Option<Progress> {
    let progress = CProgress {
        callback: callback?,
        ctx,
    };
    Some(Progress::new(move |bytes| progress.report(bytes)))
}

/// # Safety
/// `cancel` is NULL or a live handle from `layerdiff_cancel_new`.
unsafe fn cancel_token(cancel: *const layerdiff_cancel) -> Option<CancelToken> {
    // SAFETY: by the function's contract.
    unsafe { cancel.as_ref() }.map(|c| c.token.clone())
}

/// A path argument: non-NULL, non-empty, any bytes but NUL.
///
/// # Safety
/// `ptr` is NULL or a NUL-terminated string.
unsafe fn path_arg(name: &str, ptr: *const c_char) -> Result<PathBuf, layerdiff_error> {
    if ptr.is_null() {
        return Err(layerdiff_error::invalid_argument(format!("{name} is NULL")));
    }
    // SAFETY: non-NULL and NUL-terminated by contract.
    let bytes = unsafe { CStr::from_ptr(ptr) }.to_bytes();
    if bytes.is_empty() {
        return Err(layerdiff_error::invalid_argument(format!(
            "{name} is an empty path"
        )));
    }
    Ok(Path::new(std::ffi::OsStr::from_bytes(bytes)).to_path_buf())
}

/// Which way a borrowed descriptor will be used.
#[derive(Clone, Copy)]
enum FdUse {
    Read,
    Write,
}

/// Borrow the caller's descriptor as a `File` of our own: a close-on-exec duplicate, so the
/// caller's descriptor stays open whatever happens, while sharing its file offset.
fn borrow_fd(name: &str, fd: c_int, usage: FdUse) -> Result<File, layerdiff_error> {
    let bad_fd = |detail: &str| {
        layerdiff_error::new(
            crate::ErrorKind::InvalidArgument,
            libc::EBADF,
            format!("invalid argument: {name} {fd}: {detail}"),
        )
    };
    if fd < 0 {
        return Err(bad_fd("not a file descriptor"));
    }
    // SAFETY: F_GETFL only queries the descriptor table; an unopened fd fails with EBADF.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags == -1 {
        return Err(bad_fd(&std::io::Error::last_os_error().to_string()));
    }
    let access = flags & libc::O_ACCMODE;
    match usage {
        FdUse::Read if access == libc::O_WRONLY => return Err(bad_fd("not open for reading")),
        FdUse::Write if access == libc::O_RDONLY => return Err(bad_fd("not open for writing")),
        _ => {}
    }
    // SAFETY: the descriptor is open (checked above) and the caller keeps it open for the
    // duration of the call, which outlives this borrow; we only duplicate it.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let owned = borrowed.try_clone_to_owned().map_err(|e| {
        layerdiff_error::new(
            crate::ErrorKind::Io,
            e.raw_os_error().unwrap_or(0),
            format!("duplicate {name} {fd}: {e}"),
        )
    })?;
    Ok(File::from(owned))
}

/// Copy `text` into a fixed C buffer with a terminating NUL.
fn copy_c_string<const N: usize>(field: &str, text: &str) -> Result<[c_char; N], layerdiff_error> {
    let mut buf = [0 as c_char; N];
    if text.len() >= N || text.contains('\0') {
        return Err(layerdiff_error::new(
            crate::ErrorKind::Internal,
            0,
            format!("internal error: {field} {text:?} does not fit the {N}-byte result field"),
        ));
    }
    for (dst, &src) in buf.iter_mut().zip(text.as_bytes()) {
        *dst = src as c_char;
    }
    Ok(buf)
}

fn compression_option(compression: u32, level: i32) -> Result<Compression, layerdiff_error> {
    let chosen = match compression {
        LAYERDIFF_COMPRESSION_GZIP => match level {
            0 => Compression::Gzip {
                level: GZIP_DEFAULT_LEVEL,
            },
            1..=9 => Compression::Gzip {
                level: level as u32,
            },
            _ => {
                return Err(layerdiff_error::invalid_argument(format!(
                    "gzip level {level} is not in 1..=9 (0 = default 6)"
                )))
            }
        },
        LAYERDIFF_COMPRESSION_ZSTD => match level {
            0 => Compression::Zstd {
                level: ZSTD_DEFAULT_LEVEL,
            },
            _ => Compression::Zstd { level },
        },
        LAYERDIFF_COMPRESSION_NONE if level == 0 => Compression::None,
        LAYERDIFF_COMPRESSION_NONE => {
            return Err(layerdiff_error::invalid_argument(format!(
                "level {level} given for uncompressed output (must be 0)"
            )))
        }
        other => {
            return Err(layerdiff_error::invalid_argument(format!(
                "unknown compression {other} (LAYERDIFF_COMPRESSION_GZIP, _NONE or _ZSTD)"
            )))
        }
    };
    chosen.validate()?;
    Ok(chosen)
}

/// # Safety
/// `options` is NULL or points to a valid struct whose pointers follow its documentation.
unsafe fn compare_options(
    options: *const layerdiff_compare_options,
) -> Result<CompareOptions, layerdiff_error> {
    // SAFETY: by the function's contract.
    let Some(o) = (unsafe { options.as_ref() }) else {
        return Ok(CompareOptions::default());
    };
    Ok(CompareOptions {
        compression: compression_option(o.compression, o.level)?,
        source_date_epoch: o.has_source_date_epoch.then_some(o.source_date_epoch),
        // SAFETY: by the function's contract.
        cancel: unsafe { cancel_token(o.cancel) },
        progress: progress_hook(o.progress, o.progress_ctx),
    })
}

/// # Safety
/// `options` is NULL or points to a valid struct whose pointers follow its documentation.
unsafe fn apply_options(
    options: *const layerdiff_apply_options,
) -> Result<ApplyOptions, layerdiff_error> {
    // SAFETY: by the function's contract.
    let Some(o) = (unsafe { options.as_ref() }) else {
        return Ok(ApplyOptions::default());
    };
    let whiteouts = match o.whiteouts {
        LAYERDIFF_WHITEOUTS_REMOVE => WhiteoutMode::Remove,
        LAYERDIFF_WHITEOUTS_OVERLAY => WhiteoutMode::Overlay,
        other => {
            return Err(layerdiff_error::invalid_argument(format!(
                "unknown whiteout mode {other} (LAYERDIFF_WHITEOUTS_REMOVE or _OVERLAY)"
            )))
        }
    };
    let mut parents = Vec::with_capacity(o.parents_len.min(1024));
    if o.parents_len > 0 {
        if o.parents.is_null() {
            return Err(layerdiff_error::invalid_argument(format!(
                "parents is NULL but parents_len is {}",
                o.parents_len
            )));
        }
        // SAFETY: non-NULL, and the caller promises `parents_len` readable entries.
        let entries = unsafe { std::slice::from_raw_parts(o.parents, o.parents_len) };
        for (i, &entry) in entries.iter().enumerate() {
            // SAFETY: each entry is NULL or NUL-terminated by contract.
            parents.push(unsafe { path_arg(&format!("parents[{i}]"), entry) }?);
        }
    }
    Ok(ApplyOptions {
        whiteouts,
        parents,
        same_owner: !o.no_same_owner,
        sync_fs: o.sync_fs,
        // SAFETY: by the function's contract.
        cancel: unsafe { cancel_token(o.cancel) },
        progress: progress_hook(o.progress, o.progress_ctx),
        expected_diff_id: None,
    })
}

/// Compute the layer that turns the directory `lower` into the directory `upper`, with the
/// semantics of containerd's walking differ (`archive.WriteDiff`: the uncompressed stream is
/// byte-identical), and write it, compressed as `options` asks, to `out_fd`.
///
/// - `lower`, `upper`: NUL-terminated paths (any bytes, not necessarily UTF-8); read only.
/// - `out_fd`: borrowed, never closed; must be open for writing (a file, pipe or socket).
///   Writing starts at its current offset, which advances. As with any write(2), a pipe or
///   socket whose reader is gone raises SIGPIPE unless the process ignores it; the call then
///   fails with LAYERDIFF_ERROR_IO and errno EPIPE.
/// - `options`: NULL = the zero value (gzip level 6).
/// - `out`: must not be NULL; written only on success.
///
/// Returns NULL on success, otherwise an error the caller frees with `layerdiff_error_free`
/// (`out` untouched; `out_fd` may have received part of a layer). Thread-safe: any number of
/// calls may run at once from any threads.
///
/// # Safety
/// Pointers are NULL or valid as documented; `out_fd` stays open during the call.
#[no_mangle]
pub unsafe extern "C" fn layerdiff_compare(
    lower: *const c_char,
    upper: *const c_char,
    out_fd: c_int,
    options: *const layerdiff_compare_options,
    out: *mut layerdiff_compare_result,
) -> *mut layerdiff_error {
    guard_call("layerdiff_compare", || -> CallResult {
        if out.is_null() {
            return Err(layerdiff_error::invalid_argument("out is NULL"));
        }
        // SAFETY: the pointers follow the documented contract.
        let lower = unsafe { path_arg("lower", lower) }?;
        // SAFETY: as above.
        let upper = unsafe { path_arg("upper", upper) }?;
        // SAFETY: as above.
        let options = unsafe { compare_options(options) }?;
        let output = borrow_fd("out_fd", out_fd, FdUse::Write)?;
        let diff = crate::compare(&lower, &upper, output, &options)?;
        let result = layerdiff_compare_result {
            media_type: copy_c_string("media type", diff.media_type)?,
            digest: copy_c_string("digest", &diff.digest)?,
            size: diff.size,
            diff_id: copy_c_string("diff id", &diff.diff_id)?,
            uncompressed_size: diff.uncompressed_size,
        };
        // SAFETY: `out` is non-NULL and points to writable storage by contract.
        unsafe { out.write(result) };
        Ok(())
    })
}

/// Apply the layer read from `in_fd` (tar, gzip or zstd, detected from its first bytes) onto
/// the directory `root`, with the semantics of containerd's fs applier (`archive.Apply`),
/// never creating or changing anything outside `root`.
///
/// - `root`: NUL-terminated path of an existing directory.
/// - `in_fd`: borrowed, never closed; must be open for reading. Reading starts at its current
///   offset, which advances.
/// - `options`: NULL = the zero value (remove whiteouts, same owner).
/// - `out`: must not be NULL; written only on success, with the digest and size of the
///   uncompressed stream.
///
/// Returns NULL on success, otherwise an error the caller frees with `layerdiff_error_free`
/// (`out` untouched; `root` may hold part of the layer). Thread-safe: any number of calls may
/// run at once from any threads (on different roots).
///
/// # Safety
/// Pointers are NULL or valid as documented; `in_fd` stays open during the call.
#[no_mangle]
pub unsafe extern "C" fn layerdiff_apply(
    root: *const c_char,
    in_fd: c_int,
    options: *const layerdiff_apply_options,
    out: *mut layerdiff_apply_result,
) -> *mut layerdiff_error {
    guard_call("layerdiff_apply", || -> CallResult {
        if out.is_null() {
            return Err(layerdiff_error::invalid_argument("out is NULL"));
        }
        // SAFETY: the pointers follow the documented contract.
        let root = unsafe { path_arg("root", root) }?;
        // SAFETY: as above.
        let options = unsafe { apply_options(options) }?;
        let input = borrow_fd("in_fd", in_fd, FdUse::Read)?;
        let applied = crate::apply(&root, input, &options)?;
        let result = layerdiff_apply_result {
            media_type: copy_c_string("media type", crate::Applied::MEDIA_TYPE)?,
            digest: copy_c_string("digest", &applied.digest)?,
            size: applied.size,
        };
        // SAFETY: `out` is non-NULL and points to writable storage by contract.
        unsafe { out.write(result) };
        Ok(())
    })
}

/// Create a cancellation handle (not triggered). Release it with `layerdiff_cancel_free`.
/// Returns NULL only on an internal failure. Thread-safe.
#[no_mangle]
pub extern "C" fn layerdiff_cancel_new() -> *mut layerdiff_cancel {
    guard_value(std::ptr::null_mut(), || {
        Box::into_raw(Box::new(layerdiff_cancel {
            token: CancelToken::new(),
        }))
    })
}

/// Trigger `cancel`: every running and future call given this handle returns a
/// LAYERDIFF_ERROR_CANCELED error promptly. Safe to call from any thread at any time, any
/// number of times. NULL is ignored.
///
/// # Safety
/// `cancel` is NULL or a live handle from `layerdiff_cancel_new`.
#[no_mangle]
pub unsafe extern "C" fn layerdiff_cancel_trigger(cancel: *const layerdiff_cancel) {
    // SAFETY: by the function's contract.
    guard_value((), || {
        if let Some(c) = unsafe { cancel.as_ref() } {
            c.token.cancel()
        }
    })
}

/// Release a cancellation handle. NULL is accepted and ignored. Not while a call that was given
/// the handle is still running, nor while another thread may still trigger it.
///
/// # Safety
/// `cancel` is NULL or a handle from `layerdiff_cancel_new` not freed before.
#[no_mangle]
pub unsafe extern "C" fn layerdiff_cancel_free(cancel: *mut layerdiff_cancel) {
    if !cancel.is_null() {
        // SAFETY: from Box::into_raw in `layerdiff_cancel_new`, freed once by contract.
        guard_value((), || drop(unsafe { Box::from_raw(cancel) }))
    }
}

/// The library version ("MAJOR.MINOR.PATCH"), a static NUL-terminated string; never free it.
/// Thread-safe.
#[no_mangle]
pub extern "C" fn layerdiff_version() -> *const c_char {
    const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");
    VERSION.as_ptr().cast()
}
