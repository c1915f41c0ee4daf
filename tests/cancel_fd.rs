//! Cancellation while the input or output blocks (issue 10 finding 6): an apply reading a pipe
//! no one writes, and a compare writing a pipe no one reads, return Canceled promptly when the
//! descriptor is wrapped in a `CancellableFd`, as the C ABI (and so Go) does.

mod common;

use std::io::Write;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use common::require_root;
use common::rng::Rng;
use common::sandbox::{default_opts, Sandbox};
use common::tar::Tar;
use layerdiff::{ApplyOptions, CancelToken, CancellableFd, CompareOptions, ErrorKind};

const CANCEL_AFTER: Duration = Duration::from_millis(200);
// A hang guard, not a latency target: the latency is printed (run with --nocapture).
const HANG_GUARD: Duration = Duration::from_secs(2);
const RUNS: usize = 5;

fn pipe() -> (OwnedFd, OwnedFd) {
    rustix::pipe::pipe().expect("pipe")
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
