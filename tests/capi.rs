//! The C ABI called as C would call it: NULL and bad arguments, bad fds, error kinds, errnos and
//! messages, out-params untouched on failure, fds left open, cancellation (before and during a
//! call, from another thread), progress with its context, the version string, and a round trip.
//! (The C programs in tests/c/ repeat the essentials against the installed library under
//! sanitizers.)

use std::ffi::{c_char, c_void, CStr, CString};
use std::fs::{self, File};
use std::io::{Read, Seek};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use layerdiff::capi::*;

mod common;
use common::overlay::mount_overlay;
use common::require_root;

/// What a failed call returned, copied out of the error object (which is then freed).
#[derive(Debug)]
struct Failure {
    kind: u32,
    errno: i32,
    message: String,
}

/// Take ownership of a returned error: `None` for success.
fn take(err: *mut layerdiff_error) -> Option<Failure> {
    if err.is_null() {
        return None;
    }
    // SAFETY: a non-NULL error just returned by layerdiff, freed once here.
    unsafe {
        let message = CStr::from_ptr(layerdiff_error_message(err))
            .to_string_lossy()
            .into_owned();
        let failure = Failure {
            kind: layerdiff_error_kind(err),
            errno: layerdiff_error_errno(err),
            message,
        };
        layerdiff_error_free(err);
        Some(failure)
    }
}

#[track_caller]
fn expect_failure(err: *mut layerdiff_error, kind: u32, errno: Option<i32>, needle: &str) {
    let failure = take(err).expect("the call succeeded, expected an error");
    assert_eq!(failure.kind, kind, "{failure:?}");
    if let Some(errno) = errno {
        assert_eq!(failure.errno, errno, "{failure:?}");
    }
    assert!(
        failure.message.contains(needle),
        "{failure:?} lacks {needle:?}"
    );
}

#[track_caller]
fn expect_success(err: *mut layerdiff_error) {
    if let Some(failure) = take(err) {
        panic!("unexpected error: {failure:?}");
    }
}

fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap()
}

fn c_string(bytes: &[c_char]) -> String {
    // SAFETY: result fields are NUL-terminated by contract (checked by the caller's asserts).
    unsafe { CStr::from_ptr(bytes.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

const POISON: u64 = 0x5a5a_5a5a_5a5a_5a5a;

fn poisoned_compare_result() -> layerdiff_compare_result {
    layerdiff_compare_result {
        media_type: [0x5a; 64],
        digest: [0x5a; 72],
        size: POISON,
        diff_id: [0x5a; 72],
        uncompressed_size: POISON,
        reserved: [POISON; 8],
    }
}

fn untouched_compare(r: &layerdiff_compare_result) -> bool {
    r.media_type
        .iter()
        .chain(&r.digest)
        .chain(&r.diff_id)
        .all(|&b| b == 0x5a)
        && [r.size, r.uncompressed_size]
            .iter()
            .chain(&r.reserved)
            .all(|&w| w == POISON)
}

fn poisoned_apply_result() -> layerdiff_apply_result {
    layerdiff_apply_result {
        media_type: [0x5a; 64],
        digest: [0x5a; 72],
        size: POISON,
        reserved: [POISON; 8],
    }
}

fn untouched_apply(r: &layerdiff_apply_result) -> bool {
    r.media_type.iter().chain(&r.digest).all(|&b| b == 0x5a)
        && std::iter::once(&r.size)
            .chain(&r.reserved)
            .all(|&w| w == POISON)
}

/// The options a C caller gets from memset(0): all-zero bytes, not the library's `Default`.
fn zero_compare_options() -> layerdiff_compare_options {
    // SAFETY: all-zero is a valid value of every field (0, false, NULL pointers, no callback).
    unsafe { std::mem::zeroed() }
}

/// As [`zero_compare_options`].
fn zero_apply_options() -> layerdiff_apply_options {
    // SAFETY: as above.
    unsafe { std::mem::zeroed() }
}

fn compare_call(
    lower: &CString,
    upper: &CString,
    fd: i32,
    options: Option<&layerdiff_compare_options>,
) -> (*mut layerdiff_error, layerdiff_compare_result) {
    let mut out = poisoned_compare_result();
    let options = options.map_or(ptr::null(), |o| o as *const _);
    // SAFETY: valid strings, options and out pointer.
    let err = unsafe { layerdiff_compare(lower.as_ptr(), upper.as_ptr(), fd, options, &mut out) };
    if !err.is_null() {
        assert!(
            untouched_compare(&out),
            "result written by a failed compare"
        );
    }
    (err, out)
}

fn apply_call(
    root: &CString,
    fd: i32,
    options: Option<&layerdiff_apply_options>,
) -> (*mut layerdiff_error, layerdiff_apply_result) {
    let mut out = poisoned_apply_result();
    let options = options.map_or(ptr::null(), |o| o as *const _);
    // SAFETY: valid string, options and out pointer.
    let err = unsafe { layerdiff_apply(root.as_ptr(), fd, options, &mut out) };
    if !err.is_null() {
        assert!(untouched_apply(&out), "result written by a failed apply");
    }
    (err, out)
}

fn fd_is_open(fd: i32) -> bool {
    // SAFETY: F_GETFD only queries the descriptor table.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

/// A small lower/upper pair: upper adds, changes and deletes.
fn sample_trees(dir: &Path) -> (CString, CString) {
    let lower = dir.join("lower");
    let upper = dir.join("upper");
    for root in [&lower, &upper] {
        fs::create_dir_all(root.join("a")).unwrap();
        fs::write(root.join("a/keep"), b"keep").unwrap();
    }
    fs::write(lower.join("a/gone"), b"gone").unwrap();
    fs::write(upper.join("a/new"), vec![7u8; 100_000]).unwrap();
    (c_path(&lower), c_path(&upper))
}

#[test]
fn version_is_the_crate_version_and_static() {
    let first = layerdiff_version();
    // SAFETY: a static NUL-terminated string.
    let text = unsafe { CStr::from_ptr(first) }.to_str().unwrap();
    assert_eq!(text, env!("CARGO_PKG_VERSION"));
    assert_eq!(first, layerdiff_version());
}

#[test]
fn error_accessors_accept_null() {
    // SAFETY: NULL is documented as accepted by every accessor and free function.
    unsafe {
        assert_eq!(layerdiff_error_kind(ptr::null()), 0);
        assert_eq!(layerdiff_error_errno(ptr::null()), 0);
        assert_eq!(
            CStr::from_ptr(layerdiff_error_message(ptr::null())).to_bytes(),
            b""
        );
        layerdiff_error_free(ptr::null_mut());
        layerdiff_cancel_free(ptr::null_mut());
        layerdiff_cancel_trigger(ptr::null());
    }
}

#[test]
fn error_kind_constants_are_stable() {
    use layerdiff::ErrorKind;
    let pairs = [
        (
            LAYERDIFF_ERROR_INVALID_ARGUMENT,
            ErrorKind::InvalidArgument,
            1,
        ),
        (LAYERDIFF_ERROR_NOT_FOUND, ErrorKind::NotFound, 2),
        (
            LAYERDIFF_ERROR_NOT_IMPLEMENTED,
            ErrorKind::NotImplemented,
            3,
        ),
        (
            LAYERDIFF_ERROR_INVALID_ARCHIVE,
            ErrorKind::InvalidArchive,
            4,
        ),
        (LAYERDIFF_ERROR_CANCELED, ErrorKind::Canceled, 5),
        (LAYERDIFF_ERROR_IO, ErrorKind::Io, 6),
        (LAYERDIFF_ERROR_INTERNAL, ErrorKind::Internal, 7),
    ];
    for (constant, kind, number) in pairs {
        assert_eq!(constant, number);
        assert_eq!(kind as u32, number);
    }
}

#[test]
fn null_arguments_are_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let path = c_path(dir.path());
    let file = tempfile::tempfile().unwrap();
    let fd = file.as_raw_fd();
    let mut compare_out = poisoned_compare_result();
    let mut apply_out = poisoned_apply_result();
    // SAFETY: NULL pointers are what is being tested; the others are valid.
    unsafe {
        let err = layerdiff_compare(
            path.as_ptr(),
            ptr::null(),
            fd,
            ptr::null(),
            &mut compare_out,
        );
        expect_failure(
            err,
            LAYERDIFF_ERROR_INVALID_ARGUMENT,
            Some(0),
            "upper is NULL",
        );
        let err = layerdiff_compare(
            path.as_ptr(),
            path.as_ptr(),
            fd,
            ptr::null(),
            ptr::null_mut(),
        );
        expect_failure(
            err,
            LAYERDIFF_ERROR_INVALID_ARGUMENT,
            Some(0),
            "out is NULL",
        );
        let err = layerdiff_apply(ptr::null(), fd, ptr::null(), &mut apply_out);
        expect_failure(
            err,
            LAYERDIFF_ERROR_INVALID_ARGUMENT,
            Some(0),
            "root is NULL",
        );
        let err = layerdiff_apply(path.as_ptr(), fd, ptr::null(), ptr::null_mut());
        expect_failure(
            err,
            LAYERDIFF_ERROR_INVALID_ARGUMENT,
            Some(0),
            "out is NULL",
        );
    }
    assert!(untouched_compare(&compare_out));
    assert!(untouched_apply(&apply_out));
    let empty = CString::new("").unwrap();
    let (err, _) = compare_call(&path, &empty, fd, None);
    expect_failure(
        err,
        LAYERDIFF_ERROR_INVALID_ARGUMENT,
        Some(0),
        "upper is an empty path",
    );
    let (err, _) = apply_call(&empty, fd, None);
    expect_failure(
        err,
        LAYERDIFF_ERROR_INVALID_ARGUMENT,
        Some(0),
        "root is an empty path",
    );
}

#[test]
fn bad_fds_are_invalid_with_ebadf_and_never_closed() {
    let dir = tempfile::tempdir().unwrap();
    let path = c_path(dir.path());

    for fd in [-1, -42] {
        let (err, _) = compare_call(&path, &path, fd, None);
        expect_failure(
            err,
            LAYERDIFF_ERROR_INVALID_ARGUMENT,
            Some(libc::EBADF),
            "out_fd",
        );
        let (err, _) = apply_call(&path, fd, None);
        expect_failure(
            err,
            LAYERDIFF_ERROR_INVALID_ARGUMENT,
            Some(libc::EBADF),
            "in_fd",
        );
    }

    // A number no descriptor can have (above any open-file limit); a closed-after-open fd
    // could be reused by a test running in parallel and make this one flaky.
    let closed = 1 << 30;
    let (err, _) = compare_call(&path, &path, closed, None);
    expect_failure(
        err,
        LAYERDIFF_ERROR_INVALID_ARGUMENT,
        Some(libc::EBADF),
        "Bad file descriptor",
    );
    let (err, _) = apply_call(&path, closed, None);
    expect_failure(
        err,
        LAYERDIFF_ERROR_INVALID_ARGUMENT,
        Some(libc::EBADF),
        "Bad file descriptor",
    );

    let read_only = File::open("/dev/null").unwrap();
    let (err, _) = compare_call(&path, &path, read_only.as_raw_fd(), None);
    expect_failure(
        err,
        LAYERDIFF_ERROR_INVALID_ARGUMENT,
        Some(libc::EBADF),
        "not open for writing",
    );
    assert!(fd_is_open(read_only.as_raw_fd()));

    let write_only = File::options().write(true).open("/dev/null").unwrap();
    let (err, _) = apply_call(&path, write_only.as_raw_fd(), None);
    expect_failure(
        err,
        LAYERDIFF_ERROR_INVALID_ARGUMENT,
        Some(libc::EBADF),
        "not open for reading",
    );
    assert!(fd_is_open(write_only.as_raw_fd()));
}

#[test]
fn unsupported_options_are_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let path = c_path(dir.path());
    let out = tempfile::tempfile().unwrap();
    let cases = [
        (99, 0, "unknown compression 99"),
        (LAYERDIFF_COMPRESSION_GZIP, 42, "gzip level 42"),
        (LAYERDIFF_COMPRESSION_GZIP, -1, "gzip level -1"),
        (LAYERDIFF_COMPRESSION_ZSTD, 99, "zstd level 99"),
        (LAYERDIFF_COMPRESSION_NONE, 5, "level 5"),
        (LAYERDIFF_COMPRESSION_GZIP_ISAL, 4, "ISA-L gzip level 4"),
        (LAYERDIFF_COMPRESSION_GZIP_ISAL, -1, "ISA-L gzip level -1"),
    ];
    for (compression, level, needle) in cases {
        let options = layerdiff_compare_options {
            compression,
            level,
            ..zero_compare_options()
        };
        let (err, _) = compare_call(&path, &path, out.as_raw_fd(), Some(&options));
        expect_failure(err, LAYERDIFF_ERROR_INVALID_ARGUMENT, Some(0), needle);
    }
    assert_eq!(
        out.metadata().unwrap().len(),
        0,
        "a rejected call wrote to out_fd"
    );

    let input = tempfile::tempfile().unwrap();
    let options = layerdiff_apply_options {
        whiteouts: 7,
        ..zero_apply_options()
    };
    let (err, _) = apply_call(&path, input.as_raw_fd(), Some(&options));
    expect_failure(
        err,
        LAYERDIFF_ERROR_INVALID_ARGUMENT,
        Some(0),
        "unknown whiteouts 7 (LAYERDIFF_WHITEOUTS_REMOVE, _OVERLAY or _AUFS)",
    );

    let rootless_cases = [
        (
            layerdiff_apply_options {
                overlay_xattrs: 3,
                ..zero_apply_options()
            },
            "unknown overlay_xattrs 3",
        ),
        (
            layerdiff_apply_options {
                overlay_whiteout: 3,
                ..zero_apply_options()
            },
            "unknown overlay_whiteout 3",
        ),
        (
            layerdiff_apply_options {
                devices: 3,
                ..zero_apply_options()
            },
            "unknown devices 3",
        ),
    ];
    for (options, needle) in rootless_cases {
        let (err, _) = apply_call(&path, input.as_raw_fd(), Some(&options));
        expect_failure(err, LAYERDIFF_ERROR_INVALID_ARGUMENT, Some(0), needle);
    }

    let options = layerdiff_apply_options {
        parents_len: 3,
        ..zero_apply_options()
    };
    let (err, _) = apply_call(&path, input.as_raw_fd(), Some(&options));
    expect_failure(
        err,
        LAYERDIFF_ERROR_INVALID_ARGUMENT,
        Some(0),
        "parents is NULL",
    );

    let parents = [path.as_ptr(), ptr::null()];
    let options = layerdiff_apply_options {
        parents: parents.as_ptr(),
        parents_len: 2,
        ..zero_apply_options()
    };
    let (err, _) = apply_call(&path, input.as_raw_fd(), Some(&options));
    expect_failure(
        err,
        LAYERDIFF_ERROR_INVALID_ARGUMENT,
        Some(0),
        "parents[1] is NULL",
    );
}

#[test]
fn missing_paths_are_not_found_with_the_path_in_the_message() {
    let dir = tempfile::tempdir().unwrap();
    let existing = c_path(dir.path());
    let missing = c_path(&dir.path().join("no-such-dir"));
    let out = tempfile::tempfile().unwrap();
    let (err, _) = compare_call(&missing, &existing, out.as_raw_fd(), None);
    expect_failure(
        err,
        LAYERDIFF_ERROR_NOT_FOUND,
        Some(libc::ENOENT),
        "no-such-dir",
    );
    let (err, _) = compare_call(&existing, &missing, out.as_raw_fd(), None);
    expect_failure(
        err,
        LAYERDIFF_ERROR_NOT_FOUND,
        Some(libc::ENOENT),
        "no-such-dir",
    );
    let input = tempfile::tempfile().unwrap();
    let (err, _) = apply_call(&missing, input.as_raw_fd(), None);
    expect_failure(
        err,
        LAYERDIFF_ERROR_NOT_FOUND,
        Some(libc::ENOENT),
        "no-such-dir",
    );
}

#[test]
fn non_utf8_paths_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let odd = dir
        .path()
        .join(std::ffi::OsStr::from_bytes(b"tree-\xff\xfe"));
    fs::create_dir(&odd).unwrap();
    fs::write(odd.join("file"), b"x").unwrap();
    let empty = dir.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let out = tempfile::tempfile().unwrap();
    let options = layerdiff_compare_options {
        compression: LAYERDIFF_COMPRESSION_NONE,
        ..zero_compare_options()
    };
    let (err, result) = compare_call(
        &c_path(&empty),
        &c_path(&odd),
        out.as_raw_fd(),
        Some(&options),
    );
    expect_success(err);
    assert!(result.uncompressed_size >= 1024);
}

#[test]
fn compare_result_matches_what_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let (lower, upper) = sample_trees(dir.path());
    for (compression, media_type) in [
        (
            LAYERDIFF_COMPRESSION_GZIP,
            "application/vnd.oci.image.layer.v1.tar+gzip",
        ),
        (
            LAYERDIFF_COMPRESSION_NONE,
            "application/vnd.oci.image.layer.v1.tar",
        ),
        (
            LAYERDIFF_COMPRESSION_ZSTD,
            "application/vnd.oci.image.layer.v1.tar+zstd",
        ),
        (
            LAYERDIFF_COMPRESSION_GZIP_ISAL,
            "application/vnd.oci.image.layer.v1.tar+gzip",
        ),
    ] {
        let options = layerdiff_compare_options {
            compression,
            ..zero_compare_options()
        };
        let (written, result) = compare_bytes(&lower, &upper, Some(&options));
        assert_eq!(c_string(&result.media_type), media_type);
        assert_eq!(result.size, written.len() as u64);
        assert_eq!(c_string(&result.digest), sha256_digest(&written));
        let tar = decompressed(compression, &written);
        assert_eq!(result.uncompressed_size, tar.len() as u64);
        assert_eq!(c_string(&result.diff_id), sha256_digest(&tar));
        assert_eq!(result.reserved, [0; 8], "reserved result space not zeroed");
    }
}

/// The layer bytes a successful compare wrote to a fresh file, and its result.
fn compare_bytes(
    lower: &CString,
    upper: &CString,
    options: Option<&layerdiff_compare_options>,
) -> (Vec<u8>, layerdiff_compare_result) {
    let mut out = tempfile::tempfile().unwrap();
    let (err, result) = compare_call(lower, upper, out.as_raw_fd(), options);
    expect_success(err);
    assert!(fd_is_open(out.as_raw_fd()));
    let mut written = Vec::new();
    std::io::Seek::rewind(&mut out).unwrap();
    out.read_to_end(&mut written).unwrap();
    (written, result)
}

/// The tar inside `layer`, decoded as the compression that was asked for (not detected).
fn decompressed(compression: u32, layer: &[u8]) -> Vec<u8> {
    let mut tar = Vec::new();
    match compression {
        LAYERDIFF_COMPRESSION_GZIP | LAYERDIFF_COMPRESSION_GZIP_ISAL => {
            flate2::read::MultiGzDecoder::new(layer)
                .read_to_end(&mut tar)
                .unwrap()
        }
        LAYERDIFF_COMPRESSION_ZSTD => zstd::stream::read::Decoder::new(layer)
            .unwrap()
            .read_to_end(&mut tar)
            .unwrap(),
        _ => {
            tar.extend_from_slice(layer);
            layer.len()
        }
    };
    tar
}

fn sha256_digest(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{:x}", sha2::Sha256::digest(bytes))
}

#[test]
fn null_options_mean_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let (lower, upper) = sample_trees(dir.path());
    let out = tempfile::tempfile().unwrap();
    let (err, result) = compare_call(&lower, &upper, out.as_raw_fd(), None);
    expect_success(err);
    assert_eq!(
        c_string(&result.media_type),
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
}

#[derive(Default)]
struct ProgressLog {
    calls: AtomicU64,
    last: AtomicU64,
    went_backwards: AtomicBool,
    inside: AtomicBool,
    overlapped: AtomicBool,
}

impl ProgressLog {
    fn ctx(&self) -> *mut c_void {
        self as *const ProgressLog as *mut c_void
    }

    #[track_caller]
    fn assert_sane(&self, total: u64) {
        assert!(
            self.calls.load(Ordering::SeqCst) > 0,
            "progress never called"
        );
        assert!(!self.went_backwards.load(Ordering::SeqCst));
        assert!(
            !self.overlapped.load(Ordering::SeqCst),
            "two progress calls of one layerdiff call overlapped"
        );
        let last = self.last.load(Ordering::SeqCst);
        assert!(last > 0 && last <= total, "{last} of {total}");
    }
}

unsafe extern "C" fn log_progress(ctx: *mut c_void, bytes: u64) {
    // SAFETY: ctx is the &ProgressLog given as progress_ctx, alive for the call.
    let log = unsafe { &*(ctx as *const ProgressLog) };
    if log.inside.swap(true, Ordering::SeqCst) {
        log.overlapped.store(true, Ordering::SeqCst);
    }
    if log.last.swap(bytes, Ordering::SeqCst) > bytes {
        log.went_backwards.store(true, Ordering::SeqCst);
    }
    log.calls.fetch_add(1, Ordering::SeqCst);
    log.inside.store(false, Ordering::SeqCst);
}

#[test]
fn progress_gets_its_context_and_increasing_counts_one_call_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let (lower, upper) = sample_trees(dir.path());
    let compare_log = ProgressLog::default();
    let options = layerdiff_compare_options {
        compression: LAYERDIFF_COMPRESSION_NONE,
        progress: Some(log_progress),
        progress_ctx: compare_log.ctx(),
        ..zero_compare_options()
    };
    let (layer, result) = compare_bytes(&lower, &upper, Some(&options));
    compare_log.assert_sane(result.uncompressed_size);

    let root = dir.path().join("root");
    fs::create_dir(&root).unwrap();
    let layer_path = dir.path().join("layer.tar");
    fs::write(&layer_path, &layer).unwrap();
    let apply_log = ProgressLog::default();
    let options = layerdiff_apply_options {
        progress: Some(log_progress),
        progress_ctx: apply_log.ctx(),
        ..zero_apply_options()
    };
    let input = File::open(&layer_path).unwrap();
    let (err, _) = apply_call(&c_path(&root), input.as_raw_fd(), Some(&options));
    expect_success(err);
    apply_log.assert_sane(layer.len() as u64);
}

/// A cancel handle owned by the test, freed on drop.
struct Cancel(*mut layerdiff_cancel);

// SAFETY: the handle is documented as usable from any thread.
unsafe impl Send for Cancel {}
// SAFETY: as above.
unsafe impl Sync for Cancel {}

impl Cancel {
    fn new() -> Self {
        let handle = layerdiff_cancel_new();
        assert!(!handle.is_null());
        Cancel(handle)
    }
    fn trigger(&self) {
        // SAFETY: a live handle.
        unsafe { layerdiff_cancel_trigger(self.0) }
    }
}

impl Drop for Cancel {
    fn drop(&mut self) {
        // SAFETY: created by layerdiff_cancel_new, freed once, no call running.
        unsafe { layerdiff_cancel_free(self.0) }
    }
}

#[test]
fn cancelled_before_the_call() {
    let dir = tempfile::tempdir().unwrap();
    let (lower, upper) = sample_trees(dir.path());
    let cancel = Cancel::new();
    cancel.trigger();
    cancel.trigger();
    let options = layerdiff_compare_options {
        cancel: cancel.0,
        ..zero_compare_options()
    };
    let out = tempfile::tempfile().unwrap();
    let (err, _) = compare_call(&lower, &upper, out.as_raw_fd(), Some(&options));
    expect_failure(err, LAYERDIFF_ERROR_CANCELED, Some(0), "cancel");
}

fn pipe() -> (File, File) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two new descriptors we then own.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: fresh descriptors owned by nothing else.
    unsafe {
        (
            File::from(OwnedFd::from_raw_fd(fds[0])),
            File::from(OwnedFd::from_raw_fd(fds[1])),
        )
    }
}

#[test]
fn cancel_from_another_thread_stops_a_running_compare() {
    const FILE_SIZE: u64 = 4 << 30;
    const CANCEL_AFTER: u64 = 32 << 20;
    let dir = tempfile::tempdir().unwrap();
    let lower = dir.path().join("lower");
    let upper = dir.path().join("upper");
    fs::create_dir(&lower).unwrap();
    fs::create_dir(&upper).unwrap();
    File::create(upper.join("big"))
        .unwrap()
        .set_len(FILE_SIZE)
        .unwrap(); // sparse

    let (mut reader, writer) = pipe();
    let drained = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicBool::new(false));
    let cancel = Arc::new(Cancel::new());
    let drain = {
        let drained = drained.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                drained.fetch_add(n as u64, Ordering::SeqCst);
            }
        })
    };
    let canceller = {
        let (drained, finished, cancel) = (drained.clone(), finished.clone(), cancel.clone());
        std::thread::spawn(move || {
            while drained.load(Ordering::SeqCst) < CANCEL_AFTER && !finished.load(Ordering::SeqCst)
            {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            cancel.trigger();
        })
    };
    let options = layerdiff_compare_options {
        compression: LAYERDIFF_COMPRESSION_NONE,
        cancel: cancel.0,
        ..zero_compare_options()
    };
    let (err, _) = compare_call(
        &c_path(&lower),
        &c_path(&upper),
        writer.as_raw_fd(),
        Some(&options),
    );
    finished.store(true, Ordering::SeqCst);
    canceller.join().unwrap();
    drop(writer);
    drain.join().unwrap();
    expect_failure(err, LAYERDIFF_ERROR_CANCELED, Some(0), "cancel");
    assert!(
        drained.load(Ordering::SeqCst) < FILE_SIZE,
        "the whole file was written"
    );
}

#[test]
fn round_trip_through_the_abi() {
    let dir = tempfile::tempdir().unwrap();
    let (lower, upper) = sample_trees(dir.path());
    let root = dir.path().join("root");
    fs::create_dir_all(root.join("a")).unwrap();
    fs::write(root.join("a/keep"), b"keep").unwrap();
    fs::write(root.join("a/gone"), b"gone").unwrap();

    let layer = dir.path().join("layer");
    let out = File::create(&layer).unwrap();
    let (err, diff) = compare_call(&lower, &upper, out.as_raw_fd(), None);
    expect_success(err);
    drop(out);

    let input = File::open(&layer).unwrap();
    let (err, applied) = apply_call(&c_path(&root), input.as_raw_fd(), None);
    expect_success(err);
    assert!(fd_is_open(input.as_raw_fd()));
    assert_eq!(
        c_string(&applied.media_type),
        "application/vnd.oci.image.layer.v1.tar"
    );
    assert_eq!(c_string(&applied.digest), c_string(&diff.diff_id));
    assert_eq!(applied.size, diff.uncompressed_size);
    assert_eq!(applied.reserved, [0; 8], "reserved result space not zeroed");
    assert!(!root.join("a/gone").exists());
    assert_eq!(fs::read(root.join("a/new")).unwrap(), vec![7u8; 100_000]);
    assert_eq!(fs::read(root.join("a/keep")).unwrap(), b"keep");
}

/// A layer of [`sample_trees`] in `dir`, with its diffID.
fn sample_layer(dir: &Path) -> (std::path::PathBuf, String) {
    let (lower, upper) = sample_trees(dir);
    let layer = dir.join("layer");
    let out = File::create(&layer).unwrap();
    let (err, diff) = compare_call(&lower, &upper, out.as_raw_fd(), None);
    expect_success(err);
    (layer, c_string(&diff.diff_id))
}

/// Apply `layer` onto `root` (created empty) with `expected_diff_id` = `want`; also returns
/// how far the input was read.
fn apply_expecting(
    layer: &Path,
    root: &Path,
    want: &[u8],
) -> (*mut layerdiff_error, layerdiff_apply_result, u64) {
    fs::create_dir(root).unwrap();
    let want = CString::new(want).unwrap();
    let options = layerdiff_apply_options {
        expected_diff_id: want.as_ptr(),
        ..zero_apply_options()
    };
    let mut input = File::open(layer).unwrap();
    let (err, applied) = apply_call(&c_path(root), input.as_raw_fd(), Some(&options));
    let offset = std::io::Seek::stream_position(&mut input).unwrap();
    (err, applied, offset)
}

#[test]
fn expected_diff_id_passes_when_it_matches() {
    let dir = tempfile::tempdir().unwrap();
    let (layer, diff_id) = sample_layer(dir.path());
    let root = dir.path().join("root");
    let (err, applied, _) = apply_expecting(&layer, &root, diff_id.as_bytes());
    expect_success(err);
    assert_eq!(c_string(&applied.digest), diff_id);
    assert_eq!(fs::read(root.join("a/new")).unwrap(), vec![7u8; 100_000]);
}

#[test]
fn expected_diff_id_mismatch_is_an_invalid_archive_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let (layer, diff_id) = sample_layer(dir.path());
    let root = dir.path().join("root");
    // Another well-formed digest: the real one with its last hex digit changed.
    let mut wrong = diff_id.clone();
    let last = if wrong.ends_with('0') { "1" } else { "0" };
    wrong.replace_range(wrong.len() - 1.., last);
    let (err, _, _) = apply_expecting(&layer, &root, wrong.as_bytes());
    let failure = take(err).expect("apply with a wrong diffID succeeded");
    assert_eq!(failure.kind, LAYERDIFF_ERROR_INVALID_ARCHIVE, "{failure:?}");
    let expected = format!(
        "layer diffID is {diff_id}, not the expected {wrong} ({} may be partly written)",
        root.display()
    );
    assert!(failure.message.ends_with(&expected), "{failure:?}");
    assert!(!failure.message.contains('\n'), "{failure:?}");
}

#[test]
fn malformed_expected_diff_id_is_invalid_before_anything_is_read_or_written() {
    let dir = tempfile::tempdir().unwrap();
    let (layer, diff_id) = sample_layer(dir.path());
    let short = &diff_id.as_bytes()[..diff_id.len() - 1];
    let malformed: Vec<Vec<u8>> = vec![
        Vec::new(),
        diff_id.to_uppercase().into_bytes(),
        diff_id.replace("sha256:", "sha512:").into_bytes(),
        short.to_vec(),
        [diff_id.as_bytes(), b"0"].concat(),
        [short, b"\xff"].concat(),
    ];
    for (i, bad) in malformed.iter().enumerate() {
        let root = dir.path().join(format!("root{i}"));
        let (err, _, offset) = apply_expecting(&layer, &root, bad);
        let shown = String::from_utf8_lossy(bad);
        expect_failure(
            err,
            LAYERDIFF_ERROR_INVALID_ARGUMENT,
            Some(0),
            &format!("invalid argument: diffID {shown:?} is not of the form sha256:"),
        );
        assert_eq!(offset, 0, "{shown:?}: a rejected apply read its input");
        let written = fs::read_dir(&root).unwrap().count();
        assert_eq!(written, 0, "{shown:?}: a rejected apply wrote");
    }
}

#[test]
fn aufs_whiteouts_are_written_as_files() {
    let dir = tempfile::tempdir().unwrap();
    let (layer, _) = sample_layer(dir.path());
    let root = dir.path().join("root");
    fs::create_dir_all(root.join("a")).unwrap();
    fs::write(root.join("a/gone"), b"gone").unwrap();

    let input = File::open(&layer).unwrap();
    let options = layerdiff_apply_options {
        whiteouts: LAYERDIFF_WHITEOUTS_AUFS,
        ..zero_apply_options()
    };
    let (err, _) = apply_call(&c_path(&root), input.as_raw_fd(), Some(&options));
    expect_success(err);
    assert!(
        root.join("a/.wh.gone").is_file(),
        "no .wh. file in the branch"
    );
    assert_eq!(fs::read(root.join("a/gone")).unwrap(), b"gone");
}

#[test]
fn forced_rootless_overlay_forms_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let (layer, _) = sample_layer(dir.path());
    let root = dir.path().join("root");
    fs::create_dir_all(root.join("a")).unwrap();

    let input = File::open(&layer).unwrap();
    let options = layerdiff_apply_options {
        whiteouts: LAYERDIFF_WHITEOUTS_OVERLAY,
        overlay_xattrs: LAYERDIFF_OVERLAY_XATTRS_USER,
        overlay_whiteout: LAYERDIFF_OVERLAY_WHITEOUT_XATTR,
        ..zero_apply_options()
    };
    let (err, _) = apply_call(&c_path(&root), input.as_raw_fd(), Some(&options));
    expect_success(err);
    let gone = root.join("a/gone");
    assert!(gone.is_file(), "no xattr whiteout file");
    assert!(xattr::get(&gone, "user.overlay.whiteout")
        .unwrap()
        .is_some());
    assert_eq!(
        xattr::get(root.join("a"), "user.overlay.opaque").unwrap(),
        Some(b"x".to_vec())
    );
}

#[test]
fn corrupt_layer_is_an_invalid_archive() {
    let dir = tempfile::tempdir().unwrap();
    let root = c_path(dir.path());
    let layer = dir.path().join("bad.tar");
    let mut bad = vec![b'x'; 512];
    bad.extend_from_slice(&[0u8; 1024]);
    fs::write(&layer, &bad).unwrap();
    let input = File::open(&layer).unwrap();
    let (err, _) = apply_call(&root, input.as_raw_fd(), None);
    expect_failure(err, LAYERDIFF_ERROR_INVALID_ARCHIVE, None, "");
}

#[test]
fn cancel_from_another_thread_stops_a_running_apply() {
    const FILE_SIZE: u64 = 4 << 30;
    const CANCEL_AFTER: u64 = 32 << 20;
    let dir = tempfile::tempdir().unwrap();
    let (reader, mut writer) = pipe();
    let fed = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicBool::new(false));
    let cancel = Arc::new(Cancel::new());
    // Streams a tar holding one 4 GiB file; stops with EPIPE once apply closed its end.
    let feeder = {
        let fed = fed.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut header = tar::Header::new_ustar();
            header.set_path("big").unwrap();
            header.set_size(FILE_SIZE);
            header.set_mode(0o644);
            header.set_cksum();
            if writer.write_all(header.as_bytes()).is_err() {
                return false;
            }
            let zeros = vec![0u8; 1 << 16];
            let mut left = FILE_SIZE;
            while left > 0 {
                let n = left.min(zeros.len() as u64) as usize;
                if writer.write_all(&zeros[..n]).is_err() {
                    return false;
                }
                left -= n as u64;
                fed.fetch_add(n as u64, Ordering::SeqCst);
            }
            writer.write_all(&[0u8; 1024]).is_ok()
        })
    };
    let canceller = {
        let (fed, finished, cancel) = (fed.clone(), finished.clone(), cancel.clone());
        std::thread::spawn(move || {
            while fed.load(Ordering::SeqCst) < CANCEL_AFTER && !finished.load(Ordering::SeqCst) {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            cancel.trigger();
        })
    };
    let options = layerdiff_apply_options {
        cancel: cancel.0,
        ..zero_apply_options()
    };
    let (err, _) = apply_call(&c_path(dir.path()), reader.as_raw_fd(), Some(&options));
    finished.store(true, Ordering::SeqCst);
    canceller.join().unwrap();
    assert!(fd_is_open(reader.as_raw_fd()));
    drop(reader); // the feeder now gets EPIPE (Rust ignores SIGPIPE)
    let stream_completed = feeder.join().unwrap();
    expect_failure(err, LAYERDIFF_ERROR_CANCELED, Some(0), "cancel");
    assert!(
        !stream_completed,
        "the whole 4 GiB stream was read: not cancelled"
    );
}

/// Copies of the zeroed options with one reserved byte or word set (to a value whose bits move
/// across the word), each with the message it must be rejected with.
fn poisoned_reserved<T>(
    zero: fn() -> T,
    (bytes, set_byte): (usize, fn(&mut T, usize, u8)),
    (words, set_word): (usize, fn(&mut T, usize, u64)),
) -> Vec<(T, String)> {
    let mut cases = Vec::new();
    for i in 0..bytes {
        let mut options = zero();
        set_byte(&mut options, i, 0xa5);
        cases.push((options, format!("reserved_bytes[{i}] is 0xa5, not 0")));
    }
    for i in 0..words {
        let value = 1u64 << (4 * i % 64);
        let mut options = zero();
        set_word(&mut options, i, value);
        cases.push((options, format!("reserved[{i}] is {value:#x}, not 0")));
    }
    cases
}

#[test]
fn nonzero_reserved_option_space_is_rejected_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = c_path(dir.path());
    let out = tempfile::tempfile().unwrap();
    let compare_cases = poisoned_reserved(
        zero_compare_options,
        (7, |o, i, v| o.reserved_bytes[i] = v),
        (zero_compare_options().reserved.len(), |o, i, v| {
            o.reserved[i] = v
        }),
    );
    for (options, needle) in &compare_cases {
        let (err, _) = compare_call(&path, &path, out.as_raw_fd(), Some(options));
        let needle = format!("invalid argument: layerdiff_compare_options.{needle}");
        expect_failure(err, LAYERDIFF_ERROR_INVALID_ARGUMENT, Some(0), &needle);
    }
    assert_eq!(out.metadata().unwrap().len(), 0, "a rejected compare wrote");

    let mut input = tempfile::tempfile().unwrap();
    std::io::Write::write_all(&mut input, &[0u8; 1024]).unwrap();
    std::io::Seek::rewind(&mut input).unwrap();
    let apply_cases = poisoned_reserved(
        zero_apply_options,
        (2, |o, i, v| o.reserved_bytes[i] = v),
        (zero_apply_options().reserved.len(), |o, i, v| {
            o.reserved[i] = v
        }),
    );
    let mut later_fields = Vec::new();
    for i in 0..zero_apply_options().reserved_bytes2.len() {
        let mut o = zero_apply_options();
        o.reserved_bytes2[i] = 0xa5;
        later_fields.push((o, format!("reserved_bytes2[{i}] is 0xa5, not 0")));
    }
    for i in 0..zero_apply_options().reserved_word.len() {
        let mut o = zero_apply_options();
        o.reserved_word[i] = 1 << i;
        later_fields.push((o, format!("reserved_word[{i}] is {:#x}, not 0", 1 << i)));
    }
    let apply_cases: Vec<_> = apply_cases.into_iter().chain(later_fields).collect();
    for (options, needle) in &apply_cases {
        let (err, _) = apply_call(&path, input.as_raw_fd(), Some(options));
        let needle = format!("invalid argument: layerdiff_apply_options.{needle}");
        expect_failure(err, LAYERDIFF_ERROR_INVALID_ARGUMENT, Some(0), &needle);
    }
    let offset = std::io::Seek::stream_position(&mut input).unwrap();
    assert_eq!(offset, 0, "a rejected apply read its input");
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        0,
        "a rejected apply wrote"
    );
}

#[test]
fn zeroed_options_are_the_default_and_null_means_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let (lower, upper) = sample_trees(dir.path());
    let (with_null, null_result) = compare_bytes(&lower, &upper, None);
    let (with_zeroed, _) = compare_bytes(&lower, &upper, Some(&zero_compare_options()));
    let (with_default, _) = compare_bytes(&lower, &upper, Some(&Default::default()));
    assert!(
        with_null == with_zeroed,
        "zeroed compare options differ from NULL"
    );
    assert!(
        with_null == with_default,
        "Default compare options differ from NULL"
    );
    let mut rust_api = Vec::new();
    let lower_path = Path::new(std::ffi::OsStr::from_bytes(lower.as_bytes()));
    let upper_path = Path::new(std::ffi::OsStr::from_bytes(upper.as_bytes()));
    let options = layerdiff::CompareOptions::default();
    layerdiff::compare(lower_path, upper_path, &mut rust_api, &options).unwrap();
    assert!(
        with_null == rust_api,
        "NULL compare options differ from the Rust default"
    );

    let layer = dir.path().join("layer");
    fs::write(&layer, &with_null).unwrap();
    for (name, options) in [
        ("null", None),
        ("zeroed", Some(zero_apply_options())),
        ("default", Some(Default::default())),
    ] {
        let root = dir.path().join(format!("root-{name}"));
        fs::create_dir_all(root.join("a")).unwrap();
        fs::write(root.join("a/gone"), b"gone").unwrap();
        let input = File::open(&layer).unwrap();
        let (err, applied) = apply_call(&c_path(&root), input.as_raw_fd(), options.as_ref());
        expect_success(err);
        assert_eq!(c_string(&applied.digest), c_string(&null_result.diff_id));
        assert!(
            !root.join("a/gone").exists(),
            "{name}: whiteout not applied"
        );
        assert_eq!(fs::read(root.join("a/new")).unwrap(), vec![7u8; 100_000]);
    }
}

/// A tree whose layer compresses differently at different levels (unlike a run of one byte).
fn compressible_trees(dir: &Path) -> (CString, CString) {
    let lower = dir.join("lower");
    let upper = dir.join("upper");
    fs::create_dir_all(&lower).unwrap();
    fs::create_dir_all(&upper).unwrap();
    let text: String = (0..40_000u64)
        .map(|i| format!("line {i} {}\n", i * i % 9973))
        .collect();
    fs::write(upper.join("text"), text).unwrap();
    (c_path(&lower), c_path(&upper))
}

fn compare_at(lower: &CString, upper: &CString, compression: u32, level: i32) -> Vec<u8> {
    let options = layerdiff_compare_options {
        compression,
        level,
        ..zero_compare_options()
    };
    compare_bytes(lower, upper, Some(&options)).0
}

/// The CLI's `diff` output for `args`, written to a file.
fn cli_diff(dir: &Path, lower: &CString, upper: &CString, args: &[&str]) -> Vec<u8> {
    let out = dir.join("cli-layer");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_layerdiff"))
        .arg("diff")
        .args(args)
        .arg(std::ffi::OsStr::from_bytes(lower.as_bytes()))
        .arg(std::ffi::OsStr::from_bytes(upper.as_bytes()))
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "layerdiff diff {args:?}: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    fs::read(&out).unwrap()
}

/// One meaning of level 0 in every front door: the compression's default level (gzip 6, zstd
/// 3), never gzip's stored mode.
#[test]
fn level_zero_is_the_default_level_in_the_c_abi_and_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let (lower, upper) = compressible_trees(dir.path());
    for (compression, name, default_level, other_level) in [
        (LAYERDIFF_COMPRESSION_GZIP, "gzip", 6, 1),
        (LAYERDIFF_COMPRESSION_ZSTD, "zstd", 3, 19),
    ] {
        let at_zero = compare_at(&lower, &upper, compression, 0);
        let at_default = compare_at(&lower, &upper, compression, default_level);
        let at_other = compare_at(&lower, &upper, compression, other_level);
        assert!(
            at_other != at_default,
            "{name}: levels make no difference here"
        );
        assert!(
            at_zero == at_default,
            "{name}: C level 0 is not level {default_level}"
        );

        let level = default_level.to_string();
        let cli_zero = cli_diff(
            dir.path(),
            &lower,
            &upper,
            &["--compression", name, "--level", "0"],
        );
        let cli_unset = cli_diff(dir.path(), &lower, &upper, &["--compression", name]);
        let cli_default = cli_diff(
            dir.path(),
            &lower,
            &upper,
            &["--compression", name, "--level", &level],
        );
        assert!(
            cli_zero == cli_default,
            "{name}: CLI --level 0 is not --level {level}"
        );
        assert!(
            cli_unset == cli_default,
            "{name}: CLI default is not --level {level}"
        );
        assert!(
            cli_zero == at_zero,
            "{name}: CLI and C ABI disagree on level 0"
        );
    }
    let tar = compare_at(&lower, &upper, LAYERDIFF_COMPRESSION_NONE, 0);
    let cli_tar = cli_diff(
        dir.path(),
        &lower,
        &upper,
        &["--compression", "none", "--level", "0"],
    );
    assert!(
        tar == cli_tar,
        "uncompressed: CLI --level 0 differs from the C ABI"
    );
    let gzip_at_zero = compare_at(&lower, &upper, LAYERDIFF_COMPRESSION_GZIP, 0);
    assert!(
        gzip_at_zero.len() < tar.len() / 2,
        "gzip level 0 did not compress (stored mode?)"
    );
}

/// A NULL or empty lower is no lower, as containerd's `WriteDiff("", upper)`: the layer holds
/// all of upper, the same bytes as a diff against an empty directory.
#[test]
fn compare_without_a_lower() {
    let upper_dir = tempfile::tempdir().unwrap();
    fs::create_dir(upper_dir.path().join("d")).unwrap();
    fs::write(upper_dir.path().join("d/f"), b"data").unwrap();
    let empty_dir = tempfile::tempdir().unwrap();
    let upper = c_path(upper_dir.path());
    let layer_of = |lower: *const c_char| {
        let file = tempfile::tempfile().unwrap();
        let mut out = poisoned_compare_result();
        // SAFETY: lower is NULL or a valid string; the rest are valid.
        let err = unsafe {
            layerdiff_compare(
                lower,
                upper.as_ptr(),
                file.as_raw_fd(),
                ptr::null(),
                &mut out,
            )
        };
        assert!(err.is_null(), "compare failed");
        let mut bytes = Vec::new();
        let mut file = file;
        file.seek(std::io::SeekFrom::Start(0)).unwrap();
        file.read_to_end(&mut bytes).unwrap();
        bytes
    };
    let against_empty = layer_of(c_path(empty_dir.path()).as_ptr());
    assert!(against_empty.len() > 100);
    assert_eq!(layer_of(ptr::null()), against_empty, "NULL lower");
    let empty = CString::new("").unwrap();
    assert_eq!(layer_of(empty.as_ptr()), against_empty, "empty lower");
}

/// A lower tree and an empty upperdir, workdir and mount point under `dir`.
fn overlay_dirs(dir: &Path) -> [std::path::PathBuf; 4] {
    let [lower, upper, work, merged] = ["lower", "upper", "work", "merged"].map(|n| dir.join(n));
    for d in [&lower, &upper, &work, &merged] {
        fs::create_dir_all(d).unwrap();
    }
    fs::create_dir_all(lower.join("d/sub")).unwrap();
    fs::write(lower.join("a"), b"lower a").unwrap();
    fs::write(lower.join("d/x"), b"lower x").unwrap();
    fs::write(lower.join("d/y"), b"lower y").unwrap();
    fs::write(lower.join("d/sub/z"), b"lower z").unwrap();
    [lower, upper, work, merged]
}

fn compare_upperdir_call(
    lower: &Path,
    upperdir: &Path,
    overlay_xattrs: u32,
) -> (Result<Vec<u8>, Failure>, layerdiff_compare_result) {
    let mut file = tempfile::tempfile().unwrap();
    let options = layerdiff_compare_options {
        compression: LAYERDIFF_COMPRESSION_NONE,
        ..zero_compare_options()
    };
    let mut out = poisoned_compare_result();
    // SAFETY: valid strings, options and out pointer.
    let err = unsafe {
        layerdiff_compare_upperdir(
            c_path(lower).as_ptr(),
            c_path(upperdir).as_ptr(),
            overlay_xattrs,
            file.as_raw_fd(),
            &options,
            &mut out,
        )
    };
    if let Some(failure) = take(err) {
        assert!(untouched_compare(&out), "result written by a failed call");
        return (Err(failure), out);
    }
    let mut bytes = Vec::new();
    file.seek(std::io::SeekFrom::Start(0)).unwrap();
    file.read_to_end(&mut bytes).unwrap();
    (Ok(bytes), out)
}

/// layerdiff_compare_upperdir on a real overlay upperdir, changed through the merged view: the
/// bytes of the double walk of (lower, merged) while mounted, and of the CLI's `--upperdir`,
/// in both xattr namespaces.
#[test]
fn compare_upperdir_writes_the_double_walk_and_cli_bytes() {
    require_root!();
    for (extra, ns, ns_name) in [
        ("", LAYERDIFF_OVERLAY_XATTRS_TRUSTED, "trusted"),
        ("userxattr", LAYERDIFF_OVERLAY_XATTRS_USER, "user"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let [lower, upper, work, merged] = overlay_dirs(dir.path());
        let mount = mount_overlay(&lower, &upper, &work, &merged, extra);
        fs::write(merged.join("a"), b"changed a").unwrap();
        fs::remove_file(merged.join("d/x")).unwrap();
        fs::remove_dir_all(merged.join("d/sub")).unwrap();
        fs::create_dir(merged.join("d/sub")).unwrap();
        fs::write(merged.join("d/sub/new"), b"new").unwrap();
        fs::write(merged.join("added"), b"added").unwrap();
        let options = layerdiff_compare_options {
            compression: LAYERDIFF_COMPRESSION_NONE,
            ..zero_compare_options()
        };
        let (double_walk, _) = compare_bytes(&c_path(&lower), &c_path(&merged), Some(&options));
        drop(mount);

        let (layer, out) = compare_upperdir_call(&lower, &upper, ns);
        let layer = layer.unwrap_or_else(|f| panic!("{ns_name}: {f:?}"));
        assert!(layer.len() > 1024, "{ns_name}: a layer with entries");
        assert_eq!(layer, double_walk, "{ns_name}: upperdir vs double walk");
        assert_eq!(c_string(&out.diff_id), sha256_digest(&layer), "{ns_name}");
        assert_eq!(out.uncompressed_size, layer.len() as u64, "{ns_name}");

        let cli_out = dir.path().join("cli-layer");
        let run = std::process::Command::new(env!("CARGO_BIN_EXE_layerdiff"))
            .args(["diff", "--compression", "none", "--overlay-xattrs", ns_name])
            .arg("--upperdir")
            .arg(&upper)
            .arg(&lower)
            .arg("-o")
            .arg(&cli_out)
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "layerdiff diff --upperdir: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        assert_eq!(fs::read(&cli_out).unwrap(), layer, "{ns_name}: CLI bytes");
    }
}

/// What the upperdir compare cannot match exactly (a directory renamed with redirect_dir=on)
/// is LAYERDIFF_ERROR_NOT_IMPLEMENTED, the kind a caller falls back on; a bad namespace or
/// path is an invalid argument.
#[test]
fn compare_upperdir_refusals_have_their_kinds() {
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    let [lower, upper, work, merged] = overlay_dirs(dir.path());
    let mount = mount_overlay(&lower, &upper, &work, &merged, "redirect_dir=on");
    fs::rename(merged.join("d"), merged.join("renamed")).unwrap();
    drop(mount);
    let (result, _) = compare_upperdir_call(&lower, &upper, LAYERDIFF_OVERLAY_XATTRS_TRUSTED);
    let failure = result.expect_err("a redirect is not representable");
    assert_eq!(failure.kind, LAYERDIFF_ERROR_NOT_IMPLEMENTED, "{failure:?}");
    assert!(failure.message.contains("redirect"), "{failure:?}");

    let (result, _) = compare_upperdir_call(&lower, &upper, 7);
    let failure = result.expect_err("namespace 7");
    assert_eq!(
        failure.kind, LAYERDIFF_ERROR_INVALID_ARGUMENT,
        "{failure:?}"
    );
    assert!(failure.message.contains("overlay_xattrs 7"), "{failure:?}");

    let mut out = poisoned_compare_result();
    // SAFETY: NULL paths are allowed to be passed (and rejected); the rest is valid.
    let err = unsafe {
        layerdiff_compare_upperdir(
            ptr::null(),
            c_path(&upper).as_ptr(),
            0,
            1,
            ptr::null(),
            &mut out,
        )
    };
    expect_failure(err, LAYERDIFF_ERROR_INVALID_ARGUMENT, None, "lower");
    assert!(untouched_compare(&out));
}

/// `unpack_threads` (which took reserved_tail[0]) is accepted, and N threads leave the tree of
/// one.
#[test]
fn unpack_threads_give_the_tree_of_one_thread() {
    let dir = tempfile::tempdir().unwrap();
    let (layer, diff_id) = sample_layer(dir.path());
    let mut trees = Vec::new();
    for threads in [1u32, 3] {
        let root = dir.path().join(format!("root{threads}"));
        fs::create_dir(&root).unwrap();
        let options = layerdiff_apply_options {
            unpack_threads: threads,
            ..zero_apply_options()
        };
        let input = File::open(&layer).unwrap();
        let (err, applied) = apply_call(&c_path(&root), input.as_raw_fd(), Some(&options));
        expect_success(err);
        assert_eq!(c_string(&applied.digest), diff_id);
        let mut tree = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                let m = fs::symlink_metadata(&p).unwrap();
                let data = if m.is_file() {
                    fs::read(&p).unwrap()
                } else {
                    Vec::new()
                };
                if m.is_dir() {
                    stack.push(p.clone());
                }
                let rel = p.strip_prefix(&root).unwrap().to_path_buf();
                tree.push((
                    rel,
                    std::os::unix::fs::PermissionsExt::mode(&m.permissions()),
                    data,
                ));
            }
        }
        tree.sort();
        trees.push(tree);
    }
    assert!(!trees[0].is_empty());
    assert_eq!(trees[0], trees[1]);
}
