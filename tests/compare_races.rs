//! `diff` of an upper tree that a hostile process changes while it is read (issue 10 findings
//! 1 and 2): renames racing the walk must never put data from outside the tree into the layer,
//! and a file swapped for a FIFO must never hang the diff.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::fs::{renameat_with, RenameFlags, CWD};

const SECRET: &[u8] = b"OUTSIDE-SECRET-0123456789abcdef!";
/// As long as the secret, so a copy that followed the swapped-in symlink fills the entry.
const HARMLESS: &[u8] = b"harmless-content-0123456789abcd!";

struct Scene {
    _tmp: tempfile::TempDir,
    lower: PathBuf,
    upper: PathBuf,
    out: PathBuf,
}

fn scene() -> Scene {
    assert_eq!(SECRET.len(), HARMLESS.len());
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("secret"), SECRET).unwrap();
    fs::write(outside.join("x"), SECRET).unwrap();
    let lower = tmp.path().join("lower");
    let upper = tmp.path().join("upper");
    fs::create_dir(&lower).unwrap();
    fs::create_dir(&upper).unwrap();
    Scene {
        out: tmp.path().join("layer.tar"),
        lower,
        upper,
        _tmp: tmp,
    }
}

/// Exchange each pair in a loop until stopped.
fn racer(pairs: Vec<(PathBuf, PathBuf)>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut swaps = 0u64;
        while !stop.load(Ordering::Relaxed) {
            for (a, b) in &pairs {
                renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE).expect("renameat2 exchange");
                swaps += 1;
            }
        }
        swaps
    })
}

/// Run `layerdiff diff` once with a watchdog; `None` if it had to be killed.
fn diff_once(s: &Scene, limit: Duration) -> Option<(bool, String)> {
    let _ = fs::remove_file(&s.out);
    let mut child = Command::new(env!("CARGO_BIN_EXE_layerdiff"))
        .args(["diff", "--compression", "none"])
        .arg(&s.lower)
        .arg(&s.upper)
        .arg("-o")
        .arg(&s.out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            return Some((
                status.success(),
                String::from_utf8_lossy(&out.stderr).into(),
            ));
        }
        if start.elapsed() > limit {
            child.kill().unwrap();
            child.wait().unwrap();
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Diff `runs` times while `pairs` are exchanged; the secret must never be in a layer.
/// Returns (successful runs, failed runs).
fn race(s: &Scene, pairs: Vec<(PathBuf, PathBuf)>, runs: usize) -> (usize, usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = racer(pairs, stop.clone());
    let (mut ok, mut failed) = (0, 0);
    let mut leak = None;
    for run in 0..runs {
        let Some((success, stderr)) = diff_once(s, Duration::from_secs(20)) else {
            stop.store(true, Ordering::Relaxed);
            swapper.join().unwrap();
            panic!("run {run}: layerdiff diff did not finish within 20 s");
        };
        if success {
            ok += 1;
            let layer = fs::read(&s.out).unwrap();
            if contains(&layer, SECRET) {
                leak = Some(run);
                break;
            }
        } else {
            failed += 1;
            assert!(
                stderr.trim_end().lines().count() == 1 && !stderr.contains("panicked"),
                "run {run}: not one clear error line: {stderr}"
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    assert!(
        leak.is_none(),
        "run {leak:?}: data from outside the tree is in the layer"
    );
    assert!(swaps > 0, "the racer never swapped");
    (ok, failed)
}

fn runs() -> usize {
    std::env::var("RACE_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150)
}

#[test]
fn file_swapped_with_symlink_to_outside_never_leaks() {
    let s = scene();
    let outside = s.upper.parent().unwrap().join("outside");
    let mut pairs = Vec::new();
    for i in 0..16 {
        let f = s.upper.join(format!("f{i:02}"));
        let lnk = s.upper.join(format!("lnk{i:02}"));
        fs::write(&f, HARMLESS).unwrap();
        symlink(outside.join("secret"), &lnk).unwrap();
        pairs.push((f, lnk));
    }
    let (ok, failed) = race(&s, pairs, runs());
    eprintln!("file swaps: {ok} layers, {failed} refused");
}

#[test]
fn dir_swapped_with_symlink_to_outside_dir_never_leaks() {
    let s = scene();
    let outside = s.upper.parent().unwrap().join("outside");
    let mut pairs = Vec::new();
    for i in 0..16 {
        let d = s.upper.join(format!("d{i:02}"));
        let lnk = s.upper.join(format!("dlnk{i:02}"));
        fs::create_dir(&d).unwrap();
        fs::write(d.join("x"), HARMLESS).unwrap();
        symlink(&outside, &lnk).unwrap();
        pairs.push((d, lnk));
    }
    let (ok, failed) = race(&s, pairs, runs());
    eprintln!("dir swaps: {ok} layers, {failed} refused");
}

#[test]
fn file_swapped_with_fifo_never_hangs() {
    let s = scene();
    let mut pairs = Vec::new();
    for i in 0..16 {
        let f = s.upper.join(format!("f{i:02}"));
        let p = s.upper.join(format!("p{i:02}"));
        fs::write(&f, HARMLESS).unwrap();
        rustix::fs::mkfifoat(CWD, &p, rustix::fs::Mode::from_raw_mode(0o644)).unwrap();
        pairs.push((f, p));
    }
    let (ok, failed) = race(&s, pairs, runs());
    eprintln!("fifo swaps: {ok} layers, {failed} refused");
}

/// A tree deeper than the walk keeps descriptors open for still diffs under a low fd limit,
/// in walk order.
#[test]
fn deep_tree_diffs_with_few_descriptors() {
    let s = scene();
    let mut p: PathBuf = s.upper.clone();
    for _ in 0..300 {
        p.push("d");
    }
    fs::create_dir_all(&p).unwrap();
    fs::write(p.join("leaf"), b"leaf").unwrap();
    // One more file at a shallow level, reached after coming back up through closed levels.
    fs::write(s.upper.join("d").join("z"), b"z").unwrap();
    let status = Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 64 && exec \"$0\" diff --compression none \"$1\" \"$2\" -o \"$3\"")
        .arg(env!("CARGO_BIN_EXE_layerdiff"))
        .arg(&s.lower)
        .arg(&s.upper)
        .arg(&s.out)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(
        status.success(),
        "diff of a 300-level tree under ulimit -n 64 failed"
    );
    let layer = fs::read(&s.out).unwrap();
    let names: Vec<String> = tar::Archive::new(&layer[..])
        .entries()
        .unwrap()
        .map(|e| String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned())
        .collect();
    assert_eq!(names.len(), 302, "300 directories, leaf and z: {names:?}");
    assert!(
        names[300].ends_with("/d/leaf"),
        "leaf after the deepest level"
    );
    assert_eq!(
        names[301], "d/z",
        "d/z after coming back up through closed levels"
    );
}
