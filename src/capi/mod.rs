//! The extern "C" layer: thin shims over the core. All `unsafe` of the crate lives here.
//!
//! Every entry point checks its pointers, converts the plain C option structs into the core's
//! options, calls [`crate::compare`] / [`crate::apply`], and catches panics so that none crosses
//! into C. File descriptors are borrowed: they are duplicated (`F_DUPFD_CLOEXEC`) and the
//! duplicate is what the core reads or writes, so the caller's descriptor is never closed and
//! its file offset advances as the layer is read or written.
//!
//! The `///` docs of the C items are copied into include/layerdiff.h by cbindgen, so they are
//! written for C readers. The `# Safety` section each `pub unsafe fn` needs for Rust readers
//! comes from [`c_contract!`], which cbindgen does not expand: it stays out of the header.
//!
//! The option and result structs are the ABI of liblayerdiff.so.0: see "Growing the structs"
//! in the header (cbindgen.toml) for the rules, and the layout assertions below.
//!
//! The C names (`layerdiff_*`, lower case) are kept in Rust so the header reads the same.
#![allow(non_camel_case_types)]

/// The `# Safety` section of an entry point: the caller keeps the C contract stated in the
/// docs above it. A macro, not a `///` comment, so that cbindgen leaves it out of the header.
macro_rules! c_contract {
    () => {
        concat!(
            "# Safety\n\n",
            "The caller keeps the C contract documented above: every pointer argument is NULL ",
            "only where that is allowed, and otherwise points to what is described, valid for ",
            "the whole call; handles and errors passed in were returned by layerdiff and not ",
            "yet freed."
        )
    };
}

mod error;

pub use error::*;

use std::ffi::{c_char, c_int, c_void, CStr};
use std::fs::File;
use std::os::fd::BorrowedFd;

use crate::control::CancellableFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use crate::{
    ApplyOptions, CancelToken, CompareOptions, Compression, DeviceNodes, IdMap, IdMaps, IdRange,
    OverlayWhiteoutForm, OverlayXattrsChoice, Progress, UnmappedId, WhiteoutMode,
};

/// Compress the layer with gzip (the zero value, as containerd's walking differ).
pub const LAYERDIFF_COMPRESSION_GZIP: u32 = 0;
/// Write the layer uncompressed.
pub const LAYERDIFF_COMPRESSION_NONE: u32 = 1;
/// Compress the layer with zstd.
pub const LAYERDIFF_COMPRESSION_ZSTD: u32 = 2;
/// Compress the layer with gzip written by ISA-L's deflate (levels 1..=3, 0 = 1): several
/// times faster, some 16% larger than gzip level 6; the media type is still tar+gzip. Fails
/// with LAYERDIFF_ERROR_INVALID_ARGUMENT when the library was built without ISA-L.
pub const LAYERDIFF_COMPRESSION_GZIP_ISAL: u32 = 3;

/// Whiteouts delete what they name (the root is a plain directory). The zero value.
pub const LAYERDIFF_WHITEOUTS_REMOVE: u32 = 0;
/// Whiteouts become overlayfs whiteouts (0/0 character devices, `trusted.overlay.opaque=y`):
/// the root is an overlay upperdir.
pub const LAYERDIFF_WHITEOUTS_OVERLAY: u32 = 1;
/// Whiteouts are written as the plain files the layer names (`.wh.NAME`, `.wh..wh..opq`): the
/// root is an aufs rw branch (containerd 1.x's `AufsConvertWhiteout`).
pub const LAYERDIFF_WHITEOUTS_AUFS: u32 = 2;

/// An ID outside a non-empty UID/GID map is an error naming the path and the ID. The zero
/// value.
pub const LAYERDIFF_UNMAPPED_ERROR: u32 = 0;
/// An ID outside a non-empty UID/GID map becomes the options' `unmapped_id` (e.g. 65534, the
/// overflow ID).
pub const LAYERDIFF_UNMAPPED_SUBSTITUTE: u32 = 1;

/// The layer carries only the `security.capability` xattr, as containerd. The zero value.
pub const LAYERDIFF_XATTRS_CAPABILITY: u32 = 0;
/// The layer carries every xattr the kernel lets the caller read, as `SCHILY.xattr.NAME` PAX
/// records, except overlayfs's own `trusted.overlay.*` and `user.overlay.*`.
pub const LAYERDIFF_XATTRS_ALL: u32 = 1;

/// Overlay mode: `user.overlay.*` inside a user namespace, else `trusted.overlay.*`. The zero
/// value.
pub const LAYERDIFF_OVERLAY_XATTRS_AUTO: u32 = 0;
/// Overlay mode: `trusted.overlay.*` (a normal overlay mount).
pub const LAYERDIFF_OVERLAY_XATTRS_TRUSTED: u32 = 1;
/// Overlay mode: `user.overlay.*` (an overlay mounted with `userxattr`, rootless).
pub const LAYERDIFF_OVERLAY_XATTRS_USER: u32 = 2;

/// Overlay mode: whiteouts are 0/0 character devices, or xattr whiteouts where mknod of one is
/// refused. The zero value.
pub const LAYERDIFF_OVERLAY_WHITEOUT_AUTO: u32 = 0;
/// Overlay mode: whiteouts are 0/0 character devices (honoured in upper and lower layers).
pub const LAYERDIFF_OVERLAY_WHITEOUT_CHARDEV: u32 = 1;
/// Overlay mode: whiteouts are zero-size files with `NS.overlay.whiteout` in a directory marked
/// `NS.overlay.opaque=x` (kernel 6.7+; honoured in lower layers only).
pub const LAYERDIFF_OVERLAY_WHITEOUT_XATTR: u32 = 2;

/// Device nodes: containerd's (skipped inside a user namespace, else created). The zero value.
pub const LAYERDIFF_DEVICES_AUTO: u32 = 0;
/// Device nodes: always created; a refused mknod is an error.
pub const LAYERDIFF_DEVICES_CREATE: u32 = 1;
/// Device nodes: skipped where the kernel refuses to create them (EPERM).
pub const LAYERDIFF_DEVICES_SKIP: u32 = 2;

/// An opaque cancellation handle. Create it with layerdiff_cancel_new(), put it in the options
/// of any number of calls, trigger it from any thread with layerdiff_cancel_trigger() (those
/// calls then fail promptly with LAYERDIFF_ERROR_CANCELED), release it with
/// layerdiff_cancel_free(). A triggered handle stays triggered.
pub struct layerdiff_cancel {
    token: CancelToken,
}

/// A progress callback, set in the `progress` field of the options with its `progress_ctx`.
///
/// layerdiff calls it only while the layerdiff_compare() or layerdiff_apply() call that was
/// given it runs, never after that call has returned, from the calling thread or from a thread
/// of layerdiff's own. The calls made for one layerdiff call never overlap: each returns before
/// the next starts, so a context used by one call at a time needs no lock (a context shared by
/// concurrent layerdiff calls does). `ctx` is `progress_ctx`, passed through untouched; `bytes`
/// never decreases: for compare the uncompressed tar bytes produced so far, for apply the input
/// bytes consumed so far.
///
/// The callback must return normally: no longjmp() out of it, no C++ exception through it. It
/// may call layerdiff_cancel_trigger().
pub type layerdiff_progress_fn = Option<unsafe extern "C" fn(ctx: *mut c_void, bytes: u64)>;

/// Options of layerdiff_compare(). Zero the whole struct (memset, or `= {0}`), then set the
/// fields you need: the all-zero struct, like a NULL options pointer, means gzip at level 6, no
/// source-date-epoch, no cancellation, no progress, IDs unchanged, only `security.capability`.
/// The `reserved*` fields must stay zero.
#[repr(C)]
pub struct layerdiff_compare_options {
    /// LAYERDIFF_COMPRESSION_*; 0 = gzip.
    pub compression: u32,
    /// Compression level; 0 = the compression's default: gzip 6 (Go's default, as containerd),
    /// ISA-L gzip 1, zstd 3 (libzstd's default). gzip takes 1 to 9 (level 0, stored, is not
    /// offered: use LAYERDIFF_COMPRESSION_NONE); ISA-L gzip 1 to 3; zstd takes its own range,
    /// negative levels being the fast modes; uncompressed output takes only 0.
    pub level: i32,
    /// Whether `source_date_epoch` is set; false = no epoch.
    pub has_source_date_epoch: bool,
    /// Must be zero (room for future options).
    pub reserved_bytes: [u8; 7],
    /// SOURCE_DATE_EPOCH in seconds: mtimes later than this are clamped to it.
    pub source_date_epoch: i64,
    /// Cancellation handle, or NULL. It must not be freed before the call returns.
    pub cancel: *const layerdiff_cancel,
    /// Progress callback (uncompressed tar bytes produced), or NULL.
    pub progress: layerdiff_progress_fn,
    /// Passed to `progress` as its first argument; layerdiff never dereferences it.
    pub progress_ctx: *mut c_void,
    /// Must be zero (room for future options).
    pub reserved: [u64; 10],
    /// UID/GID maps between host IDs on disk and container IDs in the layer; all zero = IDs
    /// unchanged.
    pub id_maps: layerdiff_id_maps,
    /// LAYERDIFF_XATTRS_*: which xattrs the layer carries; 0 = only `security.capability`,
    /// as containerd.
    pub xattrs: u32,
    /// Must be zero (room for future options).
    pub reserved_word: u32,
}

/// One range of a UID or GID map, in containerd's form: container IDs
/// `container_id..container_id+size` are host IDs `host_id..host_id+size`. Ranges of one map
/// must not overlap on either side.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct layerdiff_idmap {
    pub container_id: u32,
    pub host_id: u32,
    pub size: u32,
}

/// The UID and GID maps of a compare (host IDs on disk → container IDs in the layer) or an
/// apply (container IDs in the layer → host IDs on disk), inside their options struct. The
/// all-zero struct maps nothing.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct layerdiff_id_maps {
    /// `uidmap_len` UID ranges, read only during the call; NULL with length 0 = UIDs
    /// unchanged.
    pub uidmap: *const layerdiff_idmap,
    /// Number of entries in `uidmap` (at most 340, the kernel's limit).
    pub uidmap_len: usize,
    /// GID ranges, as `uidmap`.
    pub gidmap: *const layerdiff_idmap,
    /// Number of entries in `gidmap`.
    pub gidmap_len: usize,
    /// LAYERDIFF_UNMAPPED_*: what an ID outside a non-empty map becomes; 0 = an error naming
    /// the path and the ID.
    pub unmapped: u32,
    /// The ID used for unmapped IDs with LAYERDIFF_UNMAPPED_SUBSTITUTE (e.g. 65534), as is.
    pub unmapped_id: u32,
}

impl Default for layerdiff_id_maps {
    /// The all-zero struct.
    fn default() -> Self {
        layerdiff_id_maps {
            uidmap: std::ptr::null(),
            uidmap_len: 0,
            gidmap: std::ptr::null(),
            gidmap_len: 0,
            unmapped: 0,
            unmapped_id: 0,
        }
    }
}

/// What layerdiff_compare() wrote. The library writes the whole struct, only on success.
#[repr(C)]
pub struct layerdiff_compare_result {
    /// OCI media type of the written layer, NUL-terminated
    /// (application/vnd.oci.image.layer.v1.tar, ...tar+gzip or ...tar+zstd).
    pub media_type: [c_char; 64],
    /// "sha256:<64 hex>" of the bytes written to the descriptor, NUL-terminated.
    pub digest: [c_char; 72],
    /// Number of bytes written to the descriptor.
    pub size: u64,
    /// "sha256:<64 hex>" of the uncompressed tar (the diffID), NUL-terminated.
    pub diff_id: [c_char; 72],
    /// Size of the uncompressed tar.
    pub uncompressed_size: u64,
    /// Set to zero; later versions may return more here.
    pub reserved: [u64; 8],
}

/// Options of layerdiff_apply(). Zero the whole struct (memset, or `= {0}`), then set the
/// fields you need: the all-zero struct, like a NULL options pointer, means remove whiteouts,
/// no parents, lchown entries to the layer's uid/gid (like containerd) unmapped, no syncfs, no
/// cancellation, no progress, no diffID check. The `reserved*` fields must stay zero.
#[repr(C)]
pub struct layerdiff_apply_options {
    /// LAYERDIFF_WHITEOUTS_*; 0 = remove.
    pub whiteouts: u32,
    /// true = do not lchown entries to the layer's uid/gid; false = do, like containerd.
    pub no_same_owner: bool,
    /// true = syncfs the root's filesystem at the end.
    pub sync_fs: bool,
    /// Must be zero (room for future options).
    pub reserved_bytes: [u8; 2],
    /// Overlay lowerdirs or aufs ro branches, top first: a parent directory the layer needs but
    /// the root lacks takes its owner, mode, times and xattrs from the first of these that has
    /// it. An array of `parents_len` NUL-terminated paths, read only during the call; may be
    /// NULL when `parents_len` is 0.
    pub parents: *const *const c_char,
    /// Number of entries in `parents`.
    pub parents_len: usize,
    /// Cancellation handle, or NULL. It must not be freed before the call returns.
    pub cancel: *const layerdiff_cancel,
    /// Progress callback (input bytes consumed), or NULL.
    pub progress: layerdiff_progress_fn,
    /// Passed to `progress` as its first argument; layerdiff never dereferences it.
    pub progress_ctx: *mut c_void,
    /// The layer's diffID, "sha256:<64 lowercase hex>" NUL-terminated, read only during the
    /// call, or NULL for no check. The uncompressed stream must hash to it, or the call fails
    /// with LAYERDIFF_ERROR_INVALID_ARCHIVE. That is known only once the whole layer is read,
    /// so `root` may be partly written by then (as containerd's unpacker, which checks after
    /// applying). A malformed value fails with LAYERDIFF_ERROR_INVALID_ARGUMENT before
    /// anything is read or written.
    pub expected_diff_id: *const c_char,
    /// Must be zero (room for future options).
    pub reserved: [u64; 7],
    /// LAYERDIFF_OVERLAY_XATTRS_*; 0 = auto. Takes what was reserved[7].
    pub overlay_xattrs: u32,
    /// LAYERDIFF_OVERLAY_WHITEOUT_*; 0 = auto.
    pub overlay_whiteout: u32,
    /// LAYERDIFF_DEVICES_*; 0 = auto (containerd's). Takes what was reserved[8].
    pub devices: u32,
    /// true = an lchown the kernel refuses (an ID not mapped in this user namespace) leaves
    /// the entry owned by the caller instead of failing; false = it fails, like containerd.
    pub ignore_chown_errors: bool,
    /// Must be zero (room for future options).
    pub reserved_bytes2: [u8; 3],
    /// Threads that make files: 0 = the default (`LAYERDIFF_UNPACK_THREADS` from the
    /// environment if set, else 1); 1 = one entry at a time, as
    /// containerd; N > 1 = regular files made by N workers and committed in stream order (the
    /// same tree and the same first error as 1). Takes what was reserved_tail[0].
    pub unpack_threads: u32,
    /// Must be zero (room for future options).
    pub reserved_word: [u32; 1],
    /// UID/GID maps between container IDs in the layer and host IDs on disk; all zero = IDs
    /// unchanged.
    pub id_maps: layerdiff_id_maps,
}

/// What layerdiff_apply() read. The library writes the whole struct, only on success.
#[repr(C)]
pub struct layerdiff_apply_result {
    /// Always "application/vnd.oci.image.layer.v1.tar", NUL-terminated.
    pub media_type: [c_char; 64],
    /// "sha256:<64 hex>" of the uncompressed stream, NUL-terminated.
    pub digest: [c_char; 72],
    /// Size of the uncompressed stream.
    pub size: u64,
    /// Set to zero; later versions may return more here.
    pub reserved: [u64; 8],
}

impl Default for layerdiff_compare_options {
    /// The all-zero struct.
    fn default() -> Self {
        layerdiff_compare_options {
            compression: 0,
            level: 0,
            has_source_date_epoch: false,
            reserved_bytes: [0; 7],
            source_date_epoch: 0,
            cancel: std::ptr::null(),
            progress: None,
            progress_ctx: std::ptr::null_mut(),
            reserved: [0; 10],
            id_maps: layerdiff_id_maps::default(),
            xattrs: 0,
            reserved_word: 0,
        }
    }
}

impl Default for layerdiff_apply_options {
    /// The all-zero struct.
    fn default() -> Self {
        layerdiff_apply_options {
            whiteouts: 0,
            no_same_owner: false,
            sync_fs: false,
            reserved_bytes: [0; 2],
            parents: std::ptr::null(),
            parents_len: 0,
            cancel: std::ptr::null(),
            progress: None,
            progress_ctx: std::ptr::null_mut(),
            expected_diff_id: std::ptr::null(),
            reserved: [0; 7],
            overlay_xattrs: 0,
            overlay_whiteout: 0,
            devices: 0,
            ignore_chown_errors: false,
            reserved_bytes2: [0; 3],
            unpack_threads: 0,
            reserved_word: [0; 1],
            id_maps: layerdiff_id_maps::default(),
        }
    }
}

// The layouts are the ABI of .so.0: a field is only ever added by taking reserved space, so
// sizes and offsets never change. No padding anywhere on 64-bit targets, so every byte is a
// field the library checks or writes.
#[cfg(target_pointer_width = "64")]
const _: () = {
    use std::mem::{offset_of, size_of};
    type Co = layerdiff_compare_options;
    assert!(offset_of!(Co, compression) == 0 && offset_of!(Co, level) == 4);
    assert!(offset_of!(Co, has_source_date_epoch) == 8 && offset_of!(Co, reserved_bytes) == 9);
    assert!(offset_of!(Co, source_date_epoch) == 16 && offset_of!(Co, cancel) == 24);
    assert!(offset_of!(Co, progress) == 32 && offset_of!(Co, progress_ctx) == 40);
    assert!(offset_of!(Co, reserved) == 48 && offset_of!(Co, id_maps) == 128);
    assert!(offset_of!(Co, xattrs) == 168);
    assert!(offset_of!(Co, reserved_word) == 172 && size_of::<Co>() == 176);
    assert!(size_of::<layerdiff_idmap>() == 12);
    type Im = layerdiff_id_maps;
    assert!(offset_of!(Im, uidmap) == 0 && offset_of!(Im, uidmap_len) == 8);
    assert!(offset_of!(Im, gidmap) == 16 && offset_of!(Im, gidmap_len) == 24);
    assert!(offset_of!(Im, unmapped) == 32 && offset_of!(Im, unmapped_id) == 36);
    assert!(size_of::<Im>() == 40);

    type Ao = layerdiff_apply_options;
    assert!(offset_of!(Ao, whiteouts) == 0 && offset_of!(Ao, no_same_owner) == 4);
    assert!(offset_of!(Ao, sync_fs) == 5 && offset_of!(Ao, reserved_bytes) == 6);
    assert!(offset_of!(Ao, parents) == 8 && offset_of!(Ao, parents_len) == 16);
    assert!(offset_of!(Ao, cancel) == 24 && offset_of!(Ao, progress) == 32);
    assert!(offset_of!(Ao, progress_ctx) == 40 && offset_of!(Ao, expected_diff_id) == 48);
    assert!(offset_of!(Ao, reserved) == 56 && offset_of!(Ao, overlay_xattrs) == 112);
    assert!(offset_of!(Ao, overlay_whiteout) == 116 && offset_of!(Ao, devices) == 120);
    assert!(offset_of!(Ao, ignore_chown_errors) == 124 && offset_of!(Ao, reserved_bytes2) == 125);
    assert!(offset_of!(Ao, unpack_threads) == 128 && offset_of!(Ao, reserved_word) == 132);
    assert!(offset_of!(Ao, id_maps) == 136);
    assert!(size_of::<Ao>() == 176);

    type Cr = layerdiff_compare_result;
    assert!(offset_of!(Cr, media_type) == 0 && offset_of!(Cr, digest) == 64);
    assert!(offset_of!(Cr, size) == 136 && offset_of!(Cr, diff_id) == 144);
    assert!(offset_of!(Cr, uncompressed_size) == 216 && offset_of!(Cr, reserved) == 224);
    assert!(size_of::<Cr>() == 288);

    type Ar = layerdiff_apply_result;
    assert!(offset_of!(Ar, media_type) == 0 && offset_of!(Ar, digest) == 64);
    assert!(offset_of!(Ar, size) == 136 && offset_of!(Ar, reserved) == 144);
    assert!(size_of::<Ar>() == 208);
};

type CallResult = Result<(), layerdiff_error>;

/// Reject a nonzero reserved field, naming it: a program built against a newer header that sets
/// an option this library does not know gets an error instead of having it silently ignored.
fn check_reserved<T: Copy + Into<u64>>(field: &str, values: &[T]) -> CallResult {
    match values.iter().position(|&v| v.into() != 0) {
        None => Ok(()),
        Some(i) => Err(layerdiff_error::invalid_argument(format!(
            "{field}[{i}] is {:#x}, not 0 (reserved for options newer than layerdiff {}; zero \
             the whole struct before setting fields)",
            values[i].into(),
            env!("CARGO_PKG_VERSION")
        ))),
    }
}

/// A C callback and its context.
struct CProgress {
    callback: unsafe extern "C" fn(*mut c_void, u64),
    ctx: *mut c_void,
}

// SAFETY: the header (`layerdiff_progress_fn`) tells the caller that the callback runs on
// layerdiff's threads with its context; layerdiff never dereferences `ctx` itself.
unsafe impl Send for CProgress {}

/// The caller's progress callback as the core's [`Progress`] hook, keeping the two promises the
/// header makes whatever threads the core uses: calls go through a mutex, so they never
/// overlap, and once the guard is dropped (when the layerdiff call returns) later calls are
/// no-ops.
struct ProgressGuard(Arc<Mutex<Option<CProgress>>>);

impl ProgressGuard {
    fn new(callback: layerdiff_progress_fn, ctx: *mut c_void) -> Option<(Self, Progress)> {
        let slot = Arc::new(Mutex::new(Some(CProgress {
            callback: callback?,
            ctx,
        })));
        let hook = slot.clone();
        let progress = Progress::new(move |bytes| {
            let guard = hook.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(p) = guard.as_ref() {
                // SAFETY: the function and context the caller gave for this call, which is
                // still running (the slot is emptied when it returns).
                unsafe { (p.callback)(p.ctx, bytes) }
            }
        });
        Some((ProgressGuard(slot), progress))
    }
}

impl Drop for ProgressGuard {
    fn drop(&mut self) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// # Safety
/// Replace the caller's token (if any) in `cancel` with a token of this call only, returned
/// for the descriptor's `CancellableFd`: a read from a stalled pipe or a write to one then
/// wakes on the caller's cancel, and also when the call fails on its own (the core cancels
/// that token, never the caller's handle, which other calls may share), so the call returns
/// its error at once instead of waiting for the peer, as containerd closes its reader. No
/// thread is left using the caller's descriptor once we return.
fn call_token(cancel: &mut Option<CancelToken>) -> CancelToken {
    let call = CancelToken::for_call(cancel.as_ref());
    *cancel = Some(call.clone());
    call
}

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

/// The compression of `compression` at `level`, where level 0 is that compression's default
/// for every kind: the zero-default rule of the option structs (libzstd reads 0 the same way).
/// The CLI's `--level` follows the same rule.
fn compression_option(compression: u32, level: i32) -> Result<Compression, layerdiff_error> {
    let chosen = match (compression, level) {
        // The core's default: gzip at Go's default level (6), as containerd's walking differ.
        (LAYERDIFF_COMPRESSION_GZIP, 0) => Compression::default(),
        (LAYERDIFF_COMPRESSION_GZIP, 1..=9) => Compression::Gzip {
            level: level as u32,
        },
        (LAYERDIFF_COMPRESSION_GZIP, _) => {
            return Err(layerdiff_error::invalid_argument(format!(
                "gzip level {level} is not in 1..=9 (0 = the default, 6)"
            )))
        }
        (LAYERDIFF_COMPRESSION_GZIP_ISAL, 0) => Compression::GzipIsal { level: 1 },
        (LAYERDIFF_COMPRESSION_GZIP_ISAL, 1..=3) => Compression::GzipIsal {
            level: level as u32,
        },
        (LAYERDIFF_COMPRESSION_GZIP_ISAL, _) => {
            return Err(layerdiff_error::invalid_argument(format!(
                "ISA-L gzip level {level} is not in 1..=3 (0 = the default, 1)"
            )))
        }
        (LAYERDIFF_COMPRESSION_ZSTD, 0) => Compression::Zstd {
            level: zstd::DEFAULT_COMPRESSION_LEVEL,
        },
        (LAYERDIFF_COMPRESSION_ZSTD, _) => Compression::Zstd { level },
        (LAYERDIFF_COMPRESSION_NONE, 0) => Compression::None,
        (LAYERDIFF_COMPRESSION_NONE, _) => {
            return Err(layerdiff_error::invalid_argument(format!(
                "level {level} given for uncompressed output (must be 0)"
            )))
        }
        (other, _) => {
            return Err(layerdiff_error::invalid_argument(format!(
            "unknown compression {other} (LAYERDIFF_COMPRESSION_GZIP, _NONE, _ZSTD or _GZIP_ISAL)"
        )))
        }
    };
    chosen.validate()?;
    Ok(chosen)
}

/// The ID maps of an options struct.
///
/// # Safety
/// Each (pointer, length) of `o` is NULL with 0, or points to that many readable entries.
unsafe fn id_maps_option(o: &layerdiff_id_maps) -> Result<IdMaps, layerdiff_error> {
    let (uid, gid) = ((o.uidmap, o.uidmap_len), (o.gidmap, o.gidmap_len));
    let (unmapped, unmapped_id) = (o.unmapped, o.unmapped_id);
    let one = |what: &str, (ptr, len): (*const layerdiff_idmap, usize)| {
        if len == 0 {
            return Ok(IdMap::default());
        }
        if ptr.is_null() {
            return Err(layerdiff_error::invalid_argument(format!(
                "{what} is NULL but {what}_len is {len}"
            )));
        }
        if len > crate::idmap::MAX_RANGES {
            return Err(layerdiff_error::invalid_argument(format!(
                "{what}_len is {len}, more than the kernel's {} ranges",
                crate::idmap::MAX_RANGES
            )));
        }
        // SAFETY: non-NULL, and the caller promises `len` readable entries.
        let entries = unsafe { std::slice::from_raw_parts(ptr, len) };
        let ranges = entries
            .iter()
            .map(|e| IdRange {
                container: e.container_id,
                host: e.host_id,
                size: e.size,
            })
            .collect();
        Ok(IdMap::new(what, ranges)?)
    };
    let unmapped = match unmapped {
        LAYERDIFF_UNMAPPED_ERROR if unmapped_id == 0 => UnmappedId::Error,
        LAYERDIFF_UNMAPPED_ERROR => {
            return Err(layerdiff_error::invalid_argument(format!(
                "unmapped_id is {unmapped_id} but unmapped is LAYERDIFF_UNMAPPED_ERROR \
                 (set LAYERDIFF_UNMAPPED_SUBSTITUTE to use it)"
            )))
        }
        LAYERDIFF_UNMAPPED_SUBSTITUTE => UnmappedId::Substitute(unmapped_id),
        other => {
            return Err(layerdiff_error::invalid_argument(format!(
                "unknown unmapped policy {other} (LAYERDIFF_UNMAPPED_ERROR or _SUBSTITUTE)"
            )))
        }
    };
    Ok(IdMaps {
        uid: one("id_maps.uidmap", uid)?,
        gid: one("id_maps.gidmap", gid)?,
        unmapped,
    })
}

/// # Safety
/// The pointers in `o` follow its documentation.
unsafe fn compare_options(
    o: &layerdiff_compare_options,
) -> Result<(CompareOptions, Option<ProgressGuard>), layerdiff_error> {
    check_reserved(
        "layerdiff_compare_options.reserved_bytes",
        &o.reserved_bytes,
    )?;
    check_reserved("layerdiff_compare_options.reserved", &o.reserved)?;
    check_reserved(
        "layerdiff_compare_options.reserved_word",
        &[o.reserved_word],
    )?;
    let compression = compression_option(o.compression, o.level)?;
    // SAFETY: by the function's contract.
    let id_maps = unsafe { id_maps_option(&o.id_maps) }?;
    let all_xattrs = match o.xattrs {
        LAYERDIFF_XATTRS_CAPABILITY => false,
        LAYERDIFF_XATTRS_ALL => true,
        other => {
            return Err(layerdiff_error::invalid_argument(format!(
                "unknown xattrs choice {other} (LAYERDIFF_XATTRS_CAPABILITY or _ALL)"
            )))
        }
    };
    let (guard, progress) = ProgressGuard::new(o.progress, o.progress_ctx).unzip();
    let options = CompareOptions {
        compression,
        source_date_epoch: o.has_source_date_epoch.then_some(o.source_date_epoch),
        // SAFETY: by the function's contract.
        cancel: unsafe { cancel_token(o.cancel) },
        progress,
        id_maps,
        all_xattrs,
    };
    Ok((options, guard))
}

/// # Safety
/// The pointers in `o` follow its documentation.
unsafe fn apply_options(
    o: &layerdiff_apply_options,
) -> Result<(ApplyOptions, Option<ProgressGuard>), layerdiff_error> {
    check_reserved("layerdiff_apply_options.reserved_bytes", &o.reserved_bytes)?;
    check_reserved("layerdiff_apply_options.reserved", &o.reserved)?;
    check_reserved(
        "layerdiff_apply_options.reserved_bytes2",
        &o.reserved_bytes2,
    )?;
    check_reserved("layerdiff_apply_options.reserved_word", &o.reserved_word)?;
    let overlay_xattrs = enum_arg(
        "overlay_xattrs",
        o.overlay_xattrs,
        &[
            (LAYERDIFF_OVERLAY_XATTRS_AUTO, OverlayXattrsChoice::Auto),
            (
                LAYERDIFF_OVERLAY_XATTRS_TRUSTED,
                OverlayXattrsChoice::Trusted,
            ),
            (LAYERDIFF_OVERLAY_XATTRS_USER, OverlayXattrsChoice::User),
        ],
        "LAYERDIFF_OVERLAY_XATTRS_AUTO, _TRUSTED or _USER",
    )?;
    let overlay_whiteout = enum_arg(
        "overlay_whiteout",
        o.overlay_whiteout,
        &[
            (LAYERDIFF_OVERLAY_WHITEOUT_AUTO, OverlayWhiteoutForm::Auto),
            (
                LAYERDIFF_OVERLAY_WHITEOUT_CHARDEV,
                OverlayWhiteoutForm::CharDevice,
            ),
            (LAYERDIFF_OVERLAY_WHITEOUT_XATTR, OverlayWhiteoutForm::Xattr),
        ],
        "LAYERDIFF_OVERLAY_WHITEOUT_AUTO, _CHARDEV or _XATTR",
    )?;
    let devices = enum_arg(
        "devices",
        o.devices,
        &[
            (LAYERDIFF_DEVICES_AUTO, DeviceNodes::Auto),
            (LAYERDIFF_DEVICES_CREATE, DeviceNodes::Create),
            (LAYERDIFF_DEVICES_SKIP, DeviceNodes::SkipRefused),
        ],
        "LAYERDIFF_DEVICES_AUTO, _CREATE or _SKIP",
    )?;
    let whiteouts = enum_arg(
        "whiteouts",
        o.whiteouts,
        &[
            (LAYERDIFF_WHITEOUTS_REMOVE, WhiteoutMode::Remove),
            (LAYERDIFF_WHITEOUTS_OVERLAY, WhiteoutMode::Overlay),
            (LAYERDIFF_WHITEOUTS_AUFS, WhiteoutMode::Aufs),
        ],
        "LAYERDIFF_WHITEOUTS_REMOVE, _OVERLAY or _AUFS",
    )?;
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
    // SAFETY: NULL or NUL-terminated, by the function's contract.
    let expected_diff_id = unsafe { diff_id_arg(o.expected_diff_id) }?;
    // SAFETY: by the function's contract.
    let id_maps = unsafe { id_maps_option(&o.id_maps) }?;
    let (guard, progress) = ProgressGuard::new(o.progress, o.progress_ctx).unzip();
    let options = ApplyOptions {
        id_maps,
        whiteouts,
        parents,
        same_owner: !o.no_same_owner,
        ignore_chown_errors: o.ignore_chown_errors,
        devices,
        overlay_xattrs,
        overlay_whiteout,
        sync_fs: o.sync_fs,
        unpack_threads: o.unpack_threads as usize,
        // SAFETY: by the function's contract.
        cancel: unsafe { cancel_token(o.cancel) },
        progress,
        expected_diff_id,
        ..ApplyOptions::default()
    };
    Ok((options, guard))
}

/// The value of the enum option `field` among `choices`, or an error listing `names`.
fn enum_arg<T: Copy>(
    field: &str,
    value: u32,
    choices: &[(u32, T)],
    names: &str,
) -> Result<T, layerdiff_error> {
    choices
        .iter()
        .find(|(v, _)| *v == value)
        .map(|&(_, t)| t)
        .ok_or_else(|| {
            layerdiff_error::invalid_argument(format!("unknown {field} {value} ({names})"))
        })
}

/// The `expected_diff_id` option: NULL for none, else checked as the core checks it, so a
/// malformed one fails before the root is opened.
///
/// # Safety
/// `ptr` is NULL or a NUL-terminated string.
unsafe fn diff_id_arg(ptr: *const c_char) -> Result<Option<String>, layerdiff_error> {
    if ptr.is_null() {
        return Ok(None);
    }
    // SAFETY: non-NULL and NUL-terminated by contract.
    let bytes = unsafe { CStr::from_ptr(ptr) }.to_bytes();
    // A non-UTF-8 value is as malformed as any other; the core's check names it.
    let text = String::from_utf8_lossy(bytes).into_owned();
    crate::validate_sha256(&text)?;
    Ok(Some(text))
}

/// Compute the layer that turns the directory `lower` into the directory `upper`, with the
/// semantics of containerd's walking differ (`archive.WriteDiff`: the uncompressed stream is
/// byte-identical), and write it, compressed as `options` asks, to `out_fd`.
///
/// - `lower`, `upper`: paths of directories, only read. A NULL or empty `lower` is no lower
///   tree (containerd's `WriteDiff("", upper)`): every entry of `upper` is in the layer.
/// - `out_fd`: open for writing (a file, pipe or socket); layerdiff writes from its current
///   offset, which advances, and never closes it. It must stay open until the call returns;
///   after that no layerdiff thread touches it, whatever the outcome (success, error, cancel):
///   layerdiff writes through a duplicate, closed before the call returns.
///   As with any write(2), a pipe or socket whose reader is gone raises SIGPIPE unless the
///   process ignores it; the call then fails with LAYERDIFF_ERROR_IO and errno EPIPE.
/// - `options`: NULL, or a struct as documented at layerdiff_compare_options, read during the
///   call only. NULL means the all-zero options (gzip level 6).
/// - `out`: must not be NULL; written only on success.
///
/// Returns NULL on success, otherwise an error the caller frees with layerdiff_error_free()
/// (`out` untouched; `out_fd` may have received part of a layer). Thread-safe: any number of
/// calls may run at once from any threads.
#[doc = c_contract!()]
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
        // NULL or "" is no lower, as containerd's `WriteDiff("", upper)`.
        // SAFETY: non-NULL means NUL-terminated, by contract, so its first byte is readable.
        let lower = if lower.is_null() || unsafe { *lower } == 0 {
            PathBuf::new()
        } else {
            // SAFETY: as above.
            unsafe { path_arg("lower", lower) }?
        };
        // SAFETY: as above.
        let upper = unsafe { path_arg("upper", upper) }?;
        let zero = layerdiff_compare_options::default();
        // SAFETY: NULL or a valid struct, by contract; NULL is the all-zero struct.
        let options = unsafe { options.as_ref() }.unwrap_or(&zero);
        // SAFETY: its pointers follow its documentation, by contract.
        let (mut options, _progress) = unsafe { compare_options(options) }?;
        let output = borrow_fd("out_fd", out_fd, FdUse::Write)?;
        let output = CancellableFd::new(output, call_token(&mut options.cancel));
        let diff = crate::compare(&lower, &upper, output, &options)?;
        // SAFETY: `out` is non-NULL and points to writable storage by contract.
        unsafe { out.write(compare_result(&diff)?) };
        Ok(())
    })
}

fn compare_result(diff: &crate::Diff) -> Result<layerdiff_compare_result, layerdiff_error> {
    Ok(layerdiff_compare_result {
        media_type: copy_c_string("media type", diff.media_type)?,
        digest: copy_c_string("digest", &diff.digest)?,
        size: diff.size,
        diff_id: copy_c_string("diff id", &diff.diff_id)?,
        uncompressed_size: diff.uncompressed_size,
        reserved: [0; 8],
    })
}

/// Compute the same layer as layerdiff_compare(lower, merged) would, where `merged` is an
/// overlay of `lower` (the overlay's lower layers as one directory) and `upperdir`, by walking
/// only `upperdir` and looking up `lower` for the paths found there, so the cost follows the
/// change, not the base. The uncompressed stream is byte-identical to layerdiff_compare()'s.
///
/// - `lower`: path of the lower view (a directory, e.g. a read-only mount of the lowerdir
///   stack), only read.
/// - `upperdir`: path of the overlay's upperdir, only read. It must not be written to during
///   the call (the overlay unmounted, or its container stopped).
/// - `overlay_xattrs`: LAYERDIFF_OVERLAY_XATTRS_TRUSTED or _USER (an overlay mounted with
///   `userxattr`): where the overlay keeps its whiteout and opaque xattrs. _AUTO (0) means
///   _TRUSTED here: how the overlay was mounted cannot be read off the upperdir.
/// - `out_fd`, `options`, `out`: as for layerdiff_compare().
///
/// Where the upperdir holds something whose meaning this cannot match exactly (overlay
/// redirects from `redirect_dir=on`, `metacopy`, an `origin` that cannot be followed, unknown
/// `overlay.*` xattrs), the call fails with LAYERDIFF_ERROR_NOT_IMPLEMENTED ("not
/// representable"); nothing else reports that kind, so the caller can then fall back to
/// layerdiff_compare() of the lower and the merged view (`out_fd` may have received part of a
/// layer: restart the output). Thread-safe, as layerdiff_compare().
#[doc = c_contract!()]
#[no_mangle]
pub unsafe extern "C" fn layerdiff_compare_upperdir(
    lower: *const c_char,
    upperdir: *const c_char,
    overlay_xattrs: u32,
    out_fd: c_int,
    options: *const layerdiff_compare_options,
    out: *mut layerdiff_compare_result,
) -> *mut layerdiff_error {
    guard_call("layerdiff_compare_upperdir", || -> CallResult {
        if out.is_null() {
            return Err(layerdiff_error::invalid_argument("out is NULL"));
        }
        // SAFETY: NULL or NUL-terminated, by contract.
        let lower = unsafe { path_arg("lower", lower) }?;
        // SAFETY: as above.
        let upperdir = unsafe { path_arg("upperdir", upperdir) }?;
        let xattrs = enum_arg(
            "overlay_xattrs",
            overlay_xattrs,
            &[
                (LAYERDIFF_OVERLAY_XATTRS_AUTO, crate::OverlayXattrs::Trusted),
                (
                    LAYERDIFF_OVERLAY_XATTRS_TRUSTED,
                    crate::OverlayXattrs::Trusted,
                ),
                (LAYERDIFF_OVERLAY_XATTRS_USER, crate::OverlayXattrs::User),
            ],
            "LAYERDIFF_OVERLAY_XATTRS_AUTO, _TRUSTED or _USER",
        )?;
        let zero = layerdiff_compare_options::default();
        // SAFETY: NULL or a valid struct, by contract; NULL is the all-zero struct.
        let options = unsafe { options.as_ref() }.unwrap_or(&zero);
        // SAFETY: its pointers follow its documentation, by contract.
        let (mut options, _progress) = unsafe { compare_options(options) }?;
        let output = borrow_fd("out_fd", out_fd, FdUse::Write)?;
        let output = CancellableFd::new(output, call_token(&mut options.cancel));
        let diff = crate::compare_upperdir(&lower, &upperdir, xattrs, output, &options)?;
        // SAFETY: `out` is non-NULL and points to writable storage by contract.
        unsafe { out.write(compare_result(&diff)?) };
        Ok(())
    })
}

/// Apply the layer read from `in_fd` (tar, gzip or zstd, detected from its first bytes) onto
/// the directory `root`, with the semantics of containerd's fs applier (`archive.Apply`),
/// never creating or changing anything outside `root`.
///
/// - `root`: path of an existing directory.
/// - `in_fd`: open for reading; layerdiff reads from its current offset, which advances, and
///   never closes it. It must stay open until the call returns; after that no layerdiff
///   thread touches it, whatever the outcome (success, error, cancel): layerdiff reads through
///   a duplicate, closed before the call returns.
/// - `options`: NULL, or a struct as documented at layerdiff_apply_options, read during the
///   call only. NULL means the all-zero options (remove whiteouts, same owner).
/// - `out`: must not be NULL; written only on success, with the digest and size of the
///   uncompressed stream.
///
/// Returns NULL on success, otherwise an error the caller frees with layerdiff_error_free()
/// (`out` untouched; `root` may hold part of the layer). Thread-safe: any number of calls may
/// run at once from any threads (on different roots).
#[doc = c_contract!()]
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
        let zero = layerdiff_apply_options::default();
        // SAFETY: NULL or a valid struct, by contract; NULL is the all-zero struct.
        let options = unsafe { options.as_ref() }.unwrap_or(&zero);
        // SAFETY: its pointers follow its documentation, by contract.
        let (mut options, _progress) = unsafe { apply_options(options) }?;
        let input = borrow_fd("in_fd", in_fd, FdUse::Read)?;
        let input = CancellableFd::new(input, call_token(&mut options.cancel));
        let applied = crate::apply(&root, input, &options)?;
        let result = layerdiff_apply_result {
            media_type: copy_c_string("media type", crate::Applied::MEDIA_TYPE)?,
            digest: copy_c_string("digest", &applied.digest)?,
            size: applied.size,
            reserved: [0; 8],
        };
        // SAFETY: `out` is non-NULL and points to writable storage by contract.
        unsafe { out.write(result) };
        Ok(())
    })
}

/// Create a cancellation handle (not triggered). Release it with layerdiff_cancel_free().
/// Returns NULL only on an internal failure. Thread-safe.
#[no_mangle]
pub extern "C" fn layerdiff_cancel_new() -> *mut layerdiff_cancel {
    guard_value(std::ptr::null_mut(), || {
        Box::into_raw(Box::new(layerdiff_cancel {
            token: CancelToken::new(),
        }))
    })
}

/// Trigger `cancel`: every running and future call given this handle fails promptly with
/// LAYERDIFF_ERROR_CANCELED. May be called from any thread at any time (also from a progress
/// callback), any number of times, until the handle is freed. NULL is ignored.
#[doc = c_contract!()]
#[no_mangle]
pub unsafe extern "C" fn layerdiff_cancel_trigger(cancel: *const layerdiff_cancel) {
    guard_value((), || {
        // SAFETY: NULL or a handle not yet freed, by contract.
        if let Some(c) = unsafe { cancel.as_ref() } {
            c.token.cancel()
        }
    })
}

/// Release a cancellation handle from layerdiff_cancel_new(), once. NULL is ignored. Only when
/// no call that was given the handle is still running and no other thread may still trigger
/// it; the handle must not be used afterwards.
#[doc = c_contract!()]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_zero_is_the_default_of_each_compression() {
        assert!(matches!(
            Compression::default(),
            Compression::Gzip { level: 6 }
        ));
        assert_eq!(
            compression_option(LAYERDIFF_COMPRESSION_GZIP, 0).unwrap(),
            Compression::default()
        );
        assert_eq!(
            compression_option(LAYERDIFF_COMPRESSION_ZSTD, 0).unwrap(),
            Compression::Zstd { level: 3 }
        );
        assert_eq!(
            compression_option(LAYERDIFF_COMPRESSION_NONE, 0).unwrap(),
            Compression::None
        );
    }

    #[test]
    fn reserved_fields_are_named_with_the_first_nonzero_index() {
        assert!(check_reserved("s.reserved", &[0u64; 16]).is_ok());
        let mut words = [0u64; 16];
        words[3] = 0x40;
        words[9] = 1;
        let err = check_reserved("s.reserved", &words).unwrap_err();
        let message = err.message.to_str().unwrap();
        assert!(
            message.starts_with("invalid argument: s.reserved[3] is 0x40, not 0"),
            "{message}"
        );
    }
}
