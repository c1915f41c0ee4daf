//! Cancellation while the input or output blocks (issue 10 finding 6): an apply reading a pipe
//! no one writes, and a compare writing a pipe no one reads, return Canceled promptly when the
//! descriptor is wrapped in a `CancellableFd`, as the C ABI (and so Go) does. And a call that
//! fails on its own (a corrupt layer, a walk error) returns its error at once while its pipe
//! stalls, through the C ABI and the CLI, with or without a caller's handle.

mod common;

use std::ffi::{CStr, CString};
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::require_root;
use common::rng::Rng;
use common::sandbox::{default_opts, Sandbox};
use common::tar::Tar;
use layerdiff::capi::*;
use layerdiff::{ApplyOptions, CancelToken, CancellableFd, CompareOptions, ErrorKind};

const CANCEL_AFTER: Duration = Duration::from_millis(200);
// A hang guard, not a latency target: the latency is printed (run with --nocapture).
const HANG_GUARD: Duration = Duration::from_secs(2);
const RUNS: usize = 5;

/// Close-on-exec, so the CLI children other tests spawn meanwhile hold no copy of either end.
fn pipe() -> (OwnedFd, OwnedFd) {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).expect("pipe")
}

/// Cancel `token` after CANCEL_AFTER, run `op`, and return how long after the cancel it returned.
fn latency_of_cancel<T: std::fmt::Debug>(
    token: &CancelToken,
    op: impl FnOnce() -> layerdiff::Result<T>,
) -> Duration {
    let t2 = token.clone();
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(CANCEL_AFTER);
        let at = Instant::now();
        t2.cancel();
        at
    });
    let result = op();
    let returned = Instant::now();
    let cancelled_at = canceller.join().unwrap();
    let err = result.expect_err("the operation finished although its pipe stalled");
    assert_eq!(err.kind(), ErrorKind::Canceled, "{err}");
    returned.saturating_duration_since(cancelled_at)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
fn apply_from_a_stalled_pipe_returns_on_cancel() {
    require_root!();
    let layer = Tar::new().file("f", &vec![7u8; 1 << 20]).finish();
    let mut latencies = Vec::new();
    for _ in 0..RUNS {
        let sb = Sandbox::new();
        let (rd, wr) = pipe();
        // The start of a layer (it fits in the pipe), then silence: the writer stays open
        // until the apply returned, so its reads block.
        let mut wr = std::fs::File::from(wr);
        wr.write_all(&layer[..32 << 10]).unwrap();
        let token = CancelToken::new();
        let opts = ApplyOptions {
            cancel: Some(token.clone()),
            ..default_opts()
        };
        let input = CancellableFd::new(rd, token.clone());
        let latency = latency_of_cancel(&token, || layerdiff::apply(&sb.root(), input, &opts));
        assert!(
            latency < HANG_GUARD,
            "apply returned {latency:?} after cancel"
        );
        latencies.push(latency);
        drop(wr);
    }
    println!(
        "apply, stalled input: cancel latency median {:?} ({latencies:?})",
        median(latencies.clone())
    );
}

#[test]
fn compare_to_a_stalled_pipe_returns_on_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let (lower, upper) = (dir.path().join("lower"), dir.path().join("upper"));
    std::fs::create_dir_all(&lower).unwrap();
    std::fs::create_dir_all(&upper).unwrap();
    // Far more than a pipe holds, and incompressible, so the writer must block.
    std::fs::write(upper.join("big"), Rng::new(6).bytes(4 << 20)).unwrap();
    let mut latencies = Vec::new();
    for _ in 0..RUNS {
        let (rd, wr) = pipe();
        let token = CancelToken::new();
        let opts = CompareOptions {
            cancel: Some(token.clone()),
            ..Default::default()
        };
        let output = CancellableFd::new(wr, token.clone());
        let latency =
            latency_of_cancel(&token, || layerdiff::compare(&lower, &upper, output, &opts));
        drop(rd); // held open (unread) until now
        assert!(
            latency < HANG_GUARD,
            "compare returned {latency:?} after cancel"
        );
        latencies.push(latency);
    }
    println!(
        "compare, stalled output: cancel latency median {:?} ({latencies:?})",
        median(latencies.clone())
    );
}

// ---- A call that fails on its own does not wait for a stalled peer (issue 10, finding 6) ----
//
// containerd's applier returns its error at once and closes its reader; a library thread
// blocked in read(2) on a pipe the writer keeps open (or in write(2) on a pipe nobody reads)
// used to be joined before the call returned, so the call waited for the peer.

/// How long the peer stalls: the call must return well before (asserted under STALL_GUARD).
const STALL: Duration = Duration::from_secs(5);
const STALL_GUARD: Duration = Duration::from_secs(3);

/// A layer whose second header is garbage (bad checksum), 16 KiB in, followed by more data
/// than the writer sends before it stalls (random, so its gzip is as long).
fn corrupt_layer() -> Vec<u8> {
    Tar::new()
        .file("a", &vec![1u8; 16 << 10])
        .raw(&[b'Z'; 512])
        .file("c", &Rng::new(7).bytes(1 << 20))
        .finish()
}

/// How much the stalling writer sends before it stalls: less than a pipe holds and than the
/// apply's input and decoder chunks (256 KiB), which must go on with what has arrived.
const SENT_BEFORE_STALL: usize = 48 << 10;

/// A writer thread that sends `data[..SENT_BEFORE_STALL]` into `wr`, then keeps the pipe open
/// without writing for STALL (or until the returned sender is dropped or sent to).
fn stalling_writer(wr: OwnedFd, data: Vec<u8>) -> (mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let writer = std::thread::spawn(move || {
        let mut wr = std::fs::File::from(wr);
        // Fails (EPIPE, SIGPIPE is ignored in Rust programs) once the reader is gone.
        let _ = wr.write_all(&data[..SENT_BEFORE_STALL]);
        let _ = stop_rx.recv_timeout(STALL);
    });
    (stop_tx, writer)
}

fn c_path(p: &std::path::Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// The error of a failed C call (kind, message), freed; None on success.
fn c_error(err: *mut layerdiff_error) -> Option<(u32, String)> {
    if err.is_null() {
        return None;
    }
    // SAFETY: a live error object from the library, freed once here.
    unsafe {
        let msg = CStr::from_ptr(layerdiff_error_message(err))
            .to_string_lossy()
            .into_owned();
        let kind = layerdiff_error_kind(err);
        layerdiff_error_free(err);
        Some((kind, msg))
    }
}

fn c_apply(
    root: &std::path::Path,
    fd: i32,
    cancel: *const layerdiff_cancel,
) -> Option<(u32, String)> {
    let root = c_path(root);
    let options = layerdiff_apply_options {
        cancel,
        ..Default::default()
    };
    // SAFETY: a plain-data result struct, all-zero is valid.
    let mut out: layerdiff_apply_result = unsafe { std::mem::zeroed() };
    // SAFETY: valid string, options and out pointer; `fd` is open for the call.
    c_error(unsafe { layerdiff_apply(root.as_ptr(), fd, &options, &mut out) })
}

/// The layer's own error, not "canceled", and no sign of the stall.
fn assert_layer_error(what: &str, failure: Option<(u32, String)>, took: Duration) {
    let (kind, msg) = failure.unwrap_or_else(|| panic!("{what}: succeeded on a corrupt layer"));
    assert!(
        kind != LAYERDIFF_ERROR_CANCELED && !msg.contains("cancel"),
        "{what}: reported {msg:?} (kind {kind}) instead of the layer's error"
    );
    assert!(
        took < STALL_GUARD,
        "{what}: returned after {took:?}; the peer stalled for {STALL:?}: it waited for it ({msg})"
    );
}

/// A handle the failed calls were given is not triggered by them: a later call with it works.
fn assert_handle_still_usable(cancel: *const layerdiff_cancel) {
    let sb = Sandbox::new();
    let layer = Tar::new().file("ok", b"fine").finish();
    let (rd, wr) = pipe();
    let mut wr = std::fs::File::from(wr);
    wr.write_all(&layer).unwrap();
    drop(wr);
    let r = c_apply(&sb.root(), rd.as_raw_fd(), cancel);
    assert!(
        r.is_none(),
        "second apply with the same handle failed: {r:?}"
    );
    assert_eq!(std::fs::read(sb.root().join("ok")).unwrap(), b"fine");
}

#[test]
fn c_apply_fails_at_once_while_its_input_pipe_stalls() {
    require_root!();
    // A bad tar header (the unpacker's error) and a corrupt gzip stream (the decoder's).
    let mut gzip = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    gzip.extend(Rng::new(3).bytes(1 << 20));
    // SAFETY: a new handle, freed at the end.
    let handle = layerdiff_cancel_new();
    // A good gzip stream of the bad tar: the unpacker's error behind the decoder.
    let gzipped_tar = common::compress::gzip(&corrupt_layer(), 6);
    for (label, cancel, layer) in [
        ("tar, no handle", std::ptr::null(), corrupt_layer()),
        ("tar, with a handle", handle as *const _, corrupt_layer()),
        ("gzip, no handle", std::ptr::null(), gzip.clone()),
        ("gzip, with a handle", handle as *const _, gzip.clone()),
        (
            "gzip of the tar, no handle",
            std::ptr::null(),
            gzipped_tar.clone(),
        ),
        (
            "gzip of the tar, with a handle",
            handle as *const _,
            gzipped_tar,
        ),
    ] {
        let mut latencies = Vec::new();
        for _ in 0..RUNS {
            let sb = Sandbox::new();
            let (rd, wr) = pipe();
            let (stop, writer) = stalling_writer(wr, layer.clone());
            let start = Instant::now();
            let failure = c_apply(&sb.root(), rd.as_raw_fd(), cancel);
            let took = start.elapsed();
            drop(stop);
            drop(rd);
            writer.join().unwrap();
            assert_layer_error(&format!("layerdiff_apply, {label}"), failure, took);
            latencies.push(took);
        }
        println!(
            "layerdiff_apply ({label}), corrupt layer, input stalled {STALL:?}: returned after \
             median {:?} ({latencies:?})",
            median(latencies.clone())
        );
    }
    assert_handle_still_usable(handle);
    // SAFETY: from layerdiff_cancel_new, freed once, no call holds it.
    unsafe { layerdiff_cancel_free(handle) };
}

/// An upper tree whose walk fails after more output than a pipe holds: "a" (512 KiB of
/// random bytes) is written, then "b", owned by a UID outside the map, is an error.
fn failing_upper(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (lower, upper) = (dir.join("lower"), dir.join("upper"));
    std::fs::create_dir_all(&lower).unwrap();
    std::fs::create_dir_all(&upper).unwrap();
    std::fs::write(upper.join("a"), Rng::new(9).bytes(512 << 10)).unwrap();
    std::fs::write(upper.join("b"), b"unmapped owner").unwrap();
    rustix::fs::chown(
        upper.join("b").as_path(),
        Some(rustix::fs::Uid::from_raw(5000)),
        None,
    )
    .unwrap();
    (lower, upper)
}

/// Run `call` on a thread with a hang guard; a call that hangs fails the test (its thread is
/// left blocked; dropping the pipe's read end afterwards frees it).
fn guarded<T: Send + 'static>(call: impl FnOnce() -> T + Send + 'static) -> (T, Duration) {
    let (tx, rx) = mpsc::channel();
    let start = Instant::now();
    std::thread::spawn(move || {
        let r = call();
        let _ = tx.send((r, start.elapsed()));
    });
    rx.recv_timeout(STALL)
        .unwrap_or_else(|_| panic!("the call did not return within {STALL:?}: it hangs"))
}

#[test]
fn c_compare_fails_at_once_while_its_output_pipe_stalls() {
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    let (lower, upper) = failing_upper(dir.path());
    // SAFETY: a new handle, freed at the end.
    let handle = layerdiff_cancel_new() as usize;
    for (label, cancel, upperdir) in [
        ("compare, no handle", 0, false),
        ("compare, with a handle", handle, false),
        ("compare_upperdir, no handle", 0, true),
        ("compare_upperdir, with a handle", handle, true),
    ] {
        let mut latencies = Vec::new();
        for _ in 0..RUNS {
            let (rd, wr) = pipe();
            let (l, u) = (c_path(&lower), c_path(&upper));
            let fd = wr.as_raw_fd();
            let (failure, took) = guarded(move || {
                let map = layerdiff_idmap {
                    container_id: 0,
                    host_id: 0,
                    size: 1,
                };
                let mut options = layerdiff_compare_options {
                    compression: LAYERDIFF_COMPRESSION_NONE,
                    cancel: cancel as *const layerdiff_cancel,
                    ..Default::default()
                };
                options.id_maps.uidmap = &map;
                options.id_maps.uidmap_len = 1;
                // SAFETY: a plain-data result struct, all-zero is valid.
                let mut out: layerdiff_compare_result = unsafe { std::mem::zeroed() };
                // SAFETY: valid strings, options and out; `fd` stays open for the call.
                c_error(unsafe {
                    if upperdir {
                        layerdiff_compare_upperdir(
                            l.as_ptr(),
                            u.as_ptr(),
                            LAYERDIFF_OVERLAY_XATTRS_TRUSTED,
                            fd,
                            &options,
                            &mut out,
                        )
                    } else {
                        layerdiff_compare(l.as_ptr(), u.as_ptr(), fd, &options, &mut out)
                    }
                })
            });
            drop(rd); // nobody read it until now
            drop(wr);
            let msg = failure.as_ref().map(|f| f.1.clone()).unwrap_or_default();
            assert!(
                msg.contains("5000"),
                "{label}: not the walk's error: {msg:?}"
            );
            assert_layer_error(label, failure, took);
            latencies.push(took);
        }
        println!(
            "layerdiff_{label}, walk error, output unread: returned after median {:?} \
             ({latencies:?})",
            median(latencies.clone())
        );
    }
    assert_handle_still_usable(handle as *const _);
    // SAFETY: from layerdiff_cancel_new, freed once, no call holds it.
    unsafe { layerdiff_cancel_free(handle as *mut _) };
}

#[test]
fn cli_apply_fails_at_once_while_stdin_stalls() {
    require_root!();
    let layer = corrupt_layer();
    let mut latencies = Vec::new();
    for _ in 0..RUNS {
        let sb = Sandbox::new();
        let (rd, wr) = pipe();
        let (stop, writer) = stalling_writer(wr, layer.clone());
        let start = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_layerdiff"))
            .args(["apply", "-"])
            .arg(sb.root())
            .stdin(Stdio::from(rd))
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .output()
            .unwrap();
        let took = start.elapsed();
        drop(stop);
        writer.join().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "applied a corrupt layer");
        assert_layer_error("layerdiff apply -", Some((0, stderr)), took);
        latencies.push(took);
    }
    println!(
        "layerdiff apply - (corrupt layer, stdin stalled {STALL:?}): exited after median {:?} \
         ({latencies:?})",
        median(latencies.clone())
    );
}

#[test]
fn cli_diff_fails_at_once_while_stdout_stalls() {
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    let (lower, upper) = failing_upper(dir.path());
    let mut latencies = Vec::new();
    for _ in 0..RUNS {
        let (rd, wr) = pipe();
        let mut child = Command::new(env!("CARGO_BIN_EXE_layerdiff"))
            .args(["diff", "--compression", "none", "--uidmap", "0:0:1"])
            .arg(&lower)
            .arg(&upper)
            .args(["-o", "-"])
            .stdout(Stdio::from(wr))
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let start = Instant::now();
        let mut status = None;
        while start.elapsed() < STALL {
            if let Some(s) = child.try_wait().unwrap() {
                status = Some(s);
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let took = start.elapsed();
        drop(rd); // nobody read stdout until now; a hung diff now gets EPIPE
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let status = status.unwrap_or_else(|| panic!("layerdiff diff hung: {stderr}"));
        assert!(!status.success(), "diffed an unmappable owner");
        assert!(stderr.contains("5000"), "not the walk's error: {stderr:?}");
        assert_layer_error("layerdiff diff -", Some((0, stderr)), took);
        latencies.push(took);
    }
    println!(
        "layerdiff diff ... - (walk error, stdout unread): exited after median {:?} \
         ({latencies:?})",
        median(latencies.clone())
    );
}

/// The token plumbing itself: a child follows its parent, never the reverse, and a per-call
/// token is cancelled by a failing call while the caller's is not.
#[test]
fn child_tokens_follow_their_parent_only() {
    let parent = CancelToken::new();
    let child = parent.child();
    let grandchild = child.child();
    child.cancel();
    assert!(grandchild.is_canceled() && !parent.is_canceled());
    let other = parent.child();
    drop(parent.child()); // dropped children are pruned, not cancelled later
    parent.cancel();
    assert!(other.is_canceled());
    assert!(parent.child().is_canceled(), "child of a cancelled token");

    let caller = CancelToken::new();
    let call = CancelToken::for_call(Some(&caller));
    let dir = tempfile::tempdir().unwrap();
    let opts = CompareOptions {
        cancel: Some(call.clone()),
        ..Default::default()
    };
    let err = layerdiff::compare(&dir.path().join("none"), dir.path(), Vec::new(), &opts);
    assert!(err.is_err());
    // Failed before its pipeline started: nothing to wake, the token may stay as it is; a
    // failure inside the pipeline cancels it (the C and CLI tests above show the effect).
    assert!(
        !caller.is_canceled(),
        "a failing call cancelled its caller's token"
    );
}
