//! Apply within a library caller's limits: its stack, its open-file limit, its memory, and its
//! patience when the input stalls. Each case that could kill or starve the process runs in a
//! child (this test binary run again with `CHILD_VAR` naming the case), so a crash is the
//! failure of one test, not the end of the run.

mod common;

use std::fs;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::Command;

use common::require_root;
use common::tar::Tar;
use layerdiff::{apply, ApplyOptions};
use rustix::fs::{self as rfs, Mode, OFlags};

const CHILD_VAR: &str = "LAYERDIFF_LIMITS_CHILD";

/// Levels of the deep tree: one frame per level used to overflow a 2 MiB stack.
const DEEP: usize = 6_000;

/// `DEEP` nested directories `a/a/…` under `root`, made fd-relative (the path is far longer
/// than PATH_MAX), with a file at the bottom.
fn make_deep_tree(root: &Path) {
    let mut cur: OwnedFd =
        rfs::open(root, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
    for _ in 0..DEEP {
        rfs::mkdirat(&cur, "a", Mode::from_raw_mode(0o755)).unwrap();
        cur = rfs::openat(&cur, "a", OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
    }
    let f = rfs::openat(
        &cur,
        "f",
        OFlags::WRONLY | OFlags::CREATE,
        Mode::from_raw_mode(0o644),
    )
    .unwrap();
    drop(f);
}

/// Run the case `name` of this binary in a child process; its failure message on failure.
fn run_child(test: &str, case: &str, root: &Path) -> Result<String, String> {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD_VAR, case)
        .env("LAYERDIFF_LIMITS_ROOT", root)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && text.contains("CHILD-OK") {
        Ok(text)
    } else {
        Err(format!("child {case}: {}: {}", out.status, text.trim()))
    }
}

/// In the child: lower the open-file limit, then apply `layer` on a thread with a 2 MiB stack
/// (a C caller's usual thread), printing CHILD-OK on success.
fn child_apply_small(root: &Path, layer: Vec<u8>, nofile: u64) {
    use rustix::process::{setrlimit, Resource, Rlimit};
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(nofile),
            maximum: Some(nofile),
        },
    )
    .unwrap();
    let root = root.to_path_buf();
    let res = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || apply(&root, layer.as_slice(), &ApplyOptions::default()).map(|_| ()))
        .unwrap()
        .join()
        .unwrap();
    match res {
        Ok(()) => println!("CHILD-OK"),
        Err(e) => println!("CHILD-ERR {e}"),
    }
}

/// A whiteout of a tree 6,000 levels deep (far beyond PATH_MAX, made by another program)
/// succeeds as containerd's does, for a caller on a 2 MiB stack, with 64 open files allowed or
/// with many.
#[test]
fn whiteout_of_a_6000_level_tree_on_a_small_stack_and_few_fds() {
    const TEST: &str = "whiteout_of_a_6000_level_tree_on_a_small_stack_and_few_fds";
    if let Ok(case) = std::env::var(CHILD_VAR) {
        let root = std::path::PathBuf::from(std::env::var_os("LAYERDIFF_LIMITS_ROOT").unwrap());
        let (kind, nofile) = case.split_once(':').unwrap();
        let layer = match kind {
            "whiteout" => Tar::new().file(".wh.a", b"").finish(),
            _ => Tar::new().file(".wh..wh..opq", b"").finish(),
        };
        child_apply_small(&root, layer, nofile.parse().unwrap());
        return;
    }
    require_root!();
    let mut failures = Vec::new();
    // 64 open files fail at the fd limit first; 20,000 reach the stack's end.
    for case in ["whiteout:64", "opaque:64", "whiteout:20000", "opaque:20000"] {
        let dir = tempfile::tempdir().unwrap();
        make_deep_tree(dir.path());
        match run_child(TEST, case, dir.path()) {
            Err(e) => failures.push(e),
            Ok(_) if fs::symlink_metadata(dir.path().join("a")).is_ok() => {
                failures.push(format!("{case}: the tree is still there"))
            }
            Ok(_) => {}
        }
        // Whatever the outcome, leave nothing too deep for a recursive removal: coreutils'
        // `rm` walks any depth.
        let _ = Command::new("rm")
            .arg("-rf")
            .arg(dir.path().join("a"))
            .status();
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
