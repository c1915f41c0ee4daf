//! The C ABI called as C would call it: NULL and bad arguments, bad fds, error kinds, errnos and
//! messages, out-params untouched on failure, fds left open, cancellation (before and during a
//! call, from another thread), progress with its context, the version string, and a round trip.
//! (The C programs in tests/c/ repeat the essentials against the installed library under
//! sanitizers.)

use std::ffi::{c_char, c_void, CStr, CString};
use std::fs::{self, File};
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use layerdiff::capi::*;

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

fn poisoned_compare_result() -> layerdiff_compare_result {
    layerdiff_compare_result {
        media_type: [0x5a; 64],
        digest: [0x5a; 72],
        size: 0x5a5a,
        diff_id: [0x5a; 72],
        uncompressed_size: 0x5a5a,
    }
}

fn untouched_compare(r: &layerdiff_compare_result) -> bool {
    r.media_type
        .iter()
        .chain(&r.digest)
        .chain(&r.diff_id)
        .all(|&b| b == 0x5a)
        && r.size == 0x5a5a
        && r.uncompressed_size == 0x5a5a
}

fn poisoned_apply_result() -> layerdiff_apply_result {
    layerdiff_apply_result {
        media_type: [0x5a; 64],
        digest: [0x5a; 72],
        size: 0x5a5a,
    }
}

fn untouched_apply(r: &layerdiff_apply_result) -> bool {
    r.media_type.iter().chain(&r.digest).all(|&b| b == 0x5a) && r.size == 0x5a5a
}

fn zero_compare_options() -> layerdiff_compare_options {
    layerdiff_compare_options {
        compression: 0,
        level: 0,
        has_source_date_epoch: false,
        source_date_epoch: 0,
        cancel: ptr::null(),
        progress: None,
        progress_ctx: ptr::null_mut(),
    }
}

fn zero_apply_options() -> layerdiff_apply_options {
    layerdiff_apply_options {
        whiteouts: 0,
        parents: ptr::null(),
        parents_len: 0,
        no_same_owner: false,
        sync_fs: false,
        cancel: ptr::null(),
        progress: None,
        progress_ctx: ptr::null_mut(),
    }
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
            ptr::null(),
            path.as_ptr(),
            fd,
            ptr::null(),
            &mut compare_out,
        );
        expect_failure(
            err,
            LAYERDIFF_ERROR_INVALID_ARGUMENT,
            Some(0),
            "lower is NULL",
        );
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
    let (err, _) = compare_call(&empty, &path, fd, None);
    expect_failure(
        err,
        LAYERDIFF_ERROR_INVALID_ARGUMENT,
        Some(0),
        "lower is an empty path",
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
        "unknown whiteout mode 7",
    );

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
    ] {
        let mut out = tempfile::tempfile().unwrap();
        let options = layerdiff_compare_options {
            compression,
            ..zero_compare_options()
        };
        let (err, result) = compare_call(&lower, &upper, out.as_raw_fd(), Some(&options));
        expect_success(err);
        assert!(fd_is_open(out.as_raw_fd()));
        let mut written = Vec::new();
        std::io::Seek::rewind(&mut out).unwrap();
        out.read_to_end(&mut written).unwrap();
        assert_eq!(c_string(&result.media_type), media_type);
        assert_eq!(result.size, written.len() as u64);
        assert_eq!(c_string(&result.digest), oci_digest(&written));
        let tar = match compression {
            LAYERDIFF_COMPRESSION_GZIP => {
                let mut tar = Vec::new();
                flate2::read::MultiGzDecoder::new(&written[..])
                    .read_to_end(&mut tar)
                    .unwrap();
                tar
            }
            LAYERDIFF_COMPRESSION_ZSTD => zstd::stream::decode_all(&written[..]).unwrap(),
            _ => written.clone(),
        };
        assert_eq!(result.uncompressed_size, tar.len() as u64);
        assert_eq!(c_string(&result.diff_id), oci_digest(&tar));
    }
}

/// `sha256:<hex>`, as OCI descriptors write digests.
fn oci_digest(bytes: &[u8]) -> String {
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

struct ProgressLog {
    calls: AtomicU64,
    last: AtomicU64,
    went_backwards: AtomicBool,
}

unsafe extern "C" fn log_progress(ctx: *mut c_void, bytes: u64) {
    // SAFETY: ctx is the &ProgressLog given as progress_ctx, alive for the call.
    let log = unsafe { &*(ctx as *const ProgressLog) };
    if log.last.swap(bytes, Ordering::SeqCst) > bytes {
        log.went_backwards.store(true, Ordering::SeqCst);
    }
    log.calls.fetch_add(1, Ordering::SeqCst);
}

#[test]
fn progress_gets_its_context_and_increasing_counts() {
    let dir = tempfile::tempdir().unwrap();
    let (lower, upper) = sample_trees(dir.path());
    let log = ProgressLog {
        calls: AtomicU64::new(0),
        last: AtomicU64::new(0),
        went_backwards: AtomicBool::new(false),
    };
    let options = layerdiff_compare_options {
        compression: LAYERDIFF_COMPRESSION_NONE,
        progress: Some(log_progress),
        progress_ctx: &log as *const ProgressLog as *mut c_void,
        ..zero_compare_options()
    };
    let out = tempfile::tempfile().unwrap();
    let (err, result) = compare_call(&lower, &upper, out.as_raw_fd(), Some(&options));
    expect_success(err);
    assert!(
        log.calls.load(Ordering::SeqCst) > 0,
        "progress never called"
    );
    assert!(!log.went_backwards.load(Ordering::SeqCst));
    let last = log.last.load(Ordering::SeqCst);
    assert!(
        last > 0 && last <= result.uncompressed_size,
        "{last} of {}",
        result.uncompressed_size
    );
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
    assert!(!root.join("a/gone").exists());
    assert_eq!(fs::read(root.join("a/new")).unwrap(), vec![7u8; 100_000]);
    assert_eq!(fs::read(root.join("a/keep")).unwrap(), b"keep");
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
