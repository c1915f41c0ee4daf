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

/// In the child: apply the gzip layer at `LAYERDIFF_LIMITS_ROOT`/layer.tar.gz into its
/// `root/` and print this process's peak RSS (VmHWM, KiB).
fn child_apply_peak(dir: &Path) {
    let layer = fs::read(dir.join("layer.tar.gz")).unwrap();
    fs::create_dir(dir.join("root")).unwrap();
    match apply(
        &dir.join("root"),
        layer.as_slice(),
        &ApplyOptions::default(),
    ) {
        Ok(_) => {}
        Err(e) => return println!("CHILD-ERR {e}"),
    }
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .unwrap();
    println!("CHILD-OK VmHWM={}", hwm.trim().trim_end_matches(" kB"));
}

/// Peak RSS (KiB) of a child process applying `layer` (gzip) into a fresh root.
fn apply_peak_kib(test: &str, layer: &[u8]) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("layer.tar.gz"), layer).unwrap();
    let out = run_child(test, "peak", dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let v = out.split("VmHWM=").nth(1).unwrap();
    v[..v.find(|c: char| !c.is_ascii_digit()).unwrap()]
        .parse()
        .unwrap()
}

/// A directory entry named `name` with its name in a PAX record.
fn dir_entry(name: String) -> common::tar::Entry {
    let mut e = common::tar::Entry::new(b'5', name.as_bytes());
    e.name_via = common::tar::Carrier::Pax;
    e
}

/// 8,000 sibling directories 1,000 levels deep (a ~96 KiB gzip layer) take no more than twice
/// the memory of 8,000 siblings at the top: the resolution caches used to keep one allocation
/// per component per directory (484 MiB).
#[test]
fn deep_siblings_cost_about_what_flat_ones_do() {
    const TEST: &str = "deep_siblings_cost_about_what_flat_ones_do";
    if std::env::var_os(CHILD_VAR).is_some() {
        let dir = std::env::var_os("LAYERDIFF_LIMITS_ROOT").unwrap();
        return child_apply_peak(Path::new(&dir));
    }
    require_root!();
    const SIBLINGS: usize = 8_000;
    let chain = "d/".repeat(1_000);
    let mut deep = vec![dir_entry(chain.clone())];
    deep.extend((0..SIBLINGS).map(|i| dir_entry(format!("{chain}s{i}/"))));
    let flat: Vec<_> = (0..=SIBLINGS)
        .map(|i| dir_entry(format!("s{i}/")))
        .collect();
    let deep = common::compress::gzip(&common::tar::encode(&deep), 6);
    let flat = common::compress::gzip(&common::tar::encode(&flat), 6);
    let flat_kib = apply_peak_kib(TEST, &flat);
    let deep_kib = apply_peak_kib(TEST, &deep);
    eprintln!(
        "peak RSS: flat {flat_kib} KiB, deep siblings {deep_kib} KiB ({} KiB gzip)",
        deep.len() / 1024
    );
    assert!(
        deep_kib <= 2 * flat_kib,
        "deep siblings peaked at {deep_kib} KiB, flat at {flat_kib} KiB"
    );
}

/// As containerd (which reaches every entry by its host path) refuses an entry whose path is
/// PATH_MAX bytes or longer, so do we, even where our fd-relative calls could go on; shorter
/// ones apply.
#[test]
fn entries_at_path_max_are_refused_as_containerd_refuses_them() {
    require_root!();
    let sb = common::sandbox::Sandbox::new();
    let root_len = sb.root().as_os_str().len();
    // "/" + name + NUL: the longest name that fits, and one byte more.
    let fits = 4096 - 2 - root_len;
    let name_of = |len: usize| {
        let mut n = "d/".repeat((len - 1) / 2);
        n.push_str(&"f".repeat(len - n.len()));
        n
    };
    for (len, ok) in [(fits, true), (fits + 1, false)] {
        let mut e = common::tar::Entry::new(b'0', name_of(len).as_bytes());
        e.name_via = common::tar::Carrier::Pax;
        let res = apply(
            &sb.root(),
            common::tar::encode(&[e]).as_slice(),
            &ApplyOptions::default(),
        );
        match (res, ok) {
            (Ok(_), true) => {}
            (Err(e), false) => assert!(
                e.to_string().contains("File name too long"),
                "name of {len} bytes: {e}"
            ),
            (r, _) => panic!("name of {len} bytes (root {root_len}): {:?}", r.map(|_| ())),
        }
    }
}

/// A zstd stream with a 256 or 512 MiB window (`zstd --long=28/29`) applies, as containerd's
/// decoder takes windows up to 512 MiB; a 1 GiB window is refused (by both).
#[test]
fn zstd_windows_up_to_512_mib_apply() {
    let tar = Tar::new().file("f", b"hello").finish();
    for (log, ok) in [(27, true), (28, true), (29, true), (30, false)] {
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        enc.long_distance_matching(true).unwrap();
        enc.window_log(log).unwrap();
        std::io::Write::write_all(&mut enc, &tar).unwrap();
        let layer = enc.finish().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let res = apply(dir.path(), layer.as_slice(), &ApplyOptions::default());
        assert_eq!(res.is_ok(), ok, "window log {log}: {:?}", res.map(|_| ()));
        if ok {
            assert_eq!(fs::read(dir.path().join("f")).unwrap(), b"hello");
        }
    }
}
