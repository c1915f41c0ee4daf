//! Unpacking with worker threads (`unpack_threads` > 1, docs/parallel-unpack.md) leaves the
//! very tree and the very first error of one thread: the ordering cases one by one, then
//! random layers of colliding names, whiteouts, symlinks, hardlinks and failing entries.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::require_root;
use common::rng::Rng;
use common::sandbox::Sandbox;
use common::tar::{Header, Tar};
use layerdiff::{apply, ApplyOptions, WhiteoutMode};

const THREADS: [usize; 3] = [1, 2, 4];
const TARGETS: [&str; 5] = ["d0", "../d1", "/d2", "f0", "nowhere"];

/// Everything a tree shows, but times set by the apply itself ("now").
fn snapshot(root: &Path) -> BTreeMap<Vec<u8>, String> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut names: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap()).collect();
        names.sort_by_key(|e| e.file_name());
        for e in names {
            let p = e.path();
            let rel = p
                .strip_prefix(root)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec();
            let m = fs::symlink_metadata(&p).unwrap();
            let ft = m.file_type();
            let mut desc = format!(
                "mode {:o} uid {} gid {} nlink {}",
                m.mode(),
                m.uid(),
                m.gid(),
                if ft.is_dir() { 0 } else { m.nlink() }
            );
            // Times from the layer are before 2023; others are the setup's or the apply's "now".
            if m.mtime() < 1_700_000_000 && !ft.is_dir() {
                desc += &format!(" mtime {}.{}", m.mtime(), m.mtime_nsec());
            }
            if ft.is_file() {
                desc += &format!(" data {:?}", fs::read(&p).unwrap());
                let first = inodes.entry(m.ino()).or_insert_with(|| rel.clone());
                desc += &format!(" inode-of {:?}", String::from_utf8_lossy(first));
            } else if ft.is_symlink() {
                desc += &format!(" -> {:?}", fs::read_link(&p).unwrap());
            } else if ft.is_dir() {
                stack.push(p.clone());
            }
            if let Ok(names) = xattr::list(&p) {
                for n in names {
                    let v = xattr::get(&p, &n).ok().flatten();
                    desc += &format!(" xattr {n:?}={v:?}");
                }
            }
            out.insert(rel, desc);
        }
    }
    out
}

/// Apply `layer` onto a fresh root (made by `setup`) with each thread count; every run must
/// give the tree and the result of one thread. Returns the one-thread root's sandbox.
fn same_for_all_threads(
    layer: &[u8],
    whiteouts: WhiteoutMode,
    setup: &dyn Fn(&Path),
) -> (Sandbox, Result<(), String>) {
    type Run = (Sandbox, BTreeMap<Vec<u8>, String>, Result<(), String>);
    let mut first: Option<Run> = None;
    for threads in THREADS {
        let sb = Sandbox::new();
        setup(&sb.root());
        let opts = ApplyOptions {
            unpack_threads: threads,
            whiteouts,
            ..ApplyOptions::default()
        };
        let res = apply(&sb.root(), layer, &opts).map(|_| ()).map_err(|e| {
            e.chain_message()
                .replace(sb.root().to_str().unwrap(), "ROOT")
        });
        let snap = snapshot(&sb.root());
        match &first {
            None => first = Some((sb, snap, res)),
            Some((_, snap1, res1)) => {
                assert_eq!(&res, res1, "result with {threads} threads");
                if snap != *snap1 {
                    let diff: Vec<_> = snap1
                        .iter()
                        .filter(|(k, v)| snap.get(*k) != Some(v))
                        .map(|(k, v)| format!("1 thread: {:?} {v}", String::from_utf8_lossy(k)))
                        .chain(snap.iter().filter(|(k, v)| snap1.get(*k) != Some(v)).map(
                            |(k, v)| {
                                format!("{threads} threads: {:?} {v}", String::from_utf8_lossy(k))
                            },
                        ))
                        .collect();
                    panic!("tree with {threads} threads differs:\n{}", diff.join("\n"));
                }
            }
        }
    }
    let (sb, _, res) = first.unwrap();
    (sb, res)
}

/// `n` small files in `dir`, so later entries find files in flight.
fn many(mut t: Tar, dir: &str, n: usize) -> Tar {
    for i in 0..n {
        t = t.file(&format!("{dir}/m{i}"), format!("m{i}").as_bytes());
    }
    t
}

fn none(_: &Path) {}

#[test]
fn a_file_then_a_whiteout_of_it() {
    require_root!();
    let t = many(Tar::new().dir("a/"), "a", 50)
        .file("a/f", b"gone")
        .file("a/g", b"kept");
    let layer = many(t, "a", 20).file("a/.wh.f", b"").finish();
    let (sb, res) = same_for_all_threads(&layer, WhiteoutMode::Remove, &none);
    res.unwrap();
    assert!(!sb.p("a/f").exists());
    assert_eq!(fs::read(sb.p("a/g")).unwrap(), b"kept");
}

#[test]
fn an_opaque_dir_after_files_in_flight() {
    require_root!();
    let layer = many(Tar::new().dir("a/").dir("a/sub/"), "a/sub", 30)
        .file("a/sub/.wh..wh..opq", b"")
        .file("a/sub/after", b"x")
        .finish();
    let setup = |root: &Path| {
        fs::create_dir_all(root.join("a/sub")).unwrap();
        fs::write(root.join("a/sub/lower"), b"hidden").unwrap();
    };
    let (sb, res) = same_for_all_threads(&layer, WhiteoutMode::Remove, &setup);
    res.unwrap();
    assert!(!sb.p("a/sub/lower").exists());
    assert!(sb.p("a/sub/m29").exists() && sb.p("a/sub/after").exists());
}

#[test]
fn a_file_replaced_by_a_later_entry_of_the_same_name() {
    require_root!();
    let t = many(Tar::new().dir("a/"), "a", 40).file("a/f", b"first");
    let t = many(t, "a", 5)
        .file("a/f", b"second")
        .file("a/d", b"a file");
    let t = many(t, "a", 5)
        .dir("a/d/")
        .file("a/d/in", b"in")
        .dir("a/e/");
    let layer = many(t, "a", 5).file("a/e", b"file over dir").finish();
    let setup = |root: &Path| {
        fs::create_dir_all(root.join("a")).unwrap();
        fs::write(root.join("a/m3"), b"existing, replaced").unwrap();
    };
    let (sb, res) = same_for_all_threads(&layer, WhiteoutMode::Remove, &setup);
    res.unwrap();
    assert_eq!(fs::read(sb.p("a/f")).unwrap(), b"second");
    assert_eq!(fs::read(sb.p("a/m3")).unwrap(), b"m3");
    assert_eq!(fs::read(sb.p("a/d/in")).unwrap(), b"in");
    assert_eq!(fs::read(sb.p("a/e")).unwrap(), b"file over dir");
}

#[test]
fn a_hardlink_to_a_file_still_being_written() {
    require_root!();
    let big = vec![7u8; 900 << 10];
    let t = many(Tar::new().dir("a/"), "a", 30).file("a/big", &big);
    let t = t.link("a/big", "a/hl").file("a/t", b"old");
    // A hardlink to a file that a later entry replaces keeps the old file.
    let layer = t.link("a/t", "a/tl").file("a/t", b"new").finish();
    let (sb, res) = same_for_all_threads(&layer, WhiteoutMode::Remove, &none);
    res.unwrap();
    assert_eq!(fs::read(sb.p("a/hl")).unwrap(), big);
    assert_eq!(
        fs::metadata(sb.p("a/hl")).unwrap().ino(),
        fs::metadata(sb.p("a/big")).unwrap().ino()
    );
    assert_eq!(fs::read(sb.p("a/tl")).unwrap(), b"old");
    assert_eq!(fs::read(sb.p("a/t")).unwrap(), b"new");
}

#[test]
fn an_error_mid_stream_names_nothing_after_it() {
    require_root!();
    // An xattr name over 255 bytes: the kernel refuses it (ERANGE) in the file's worker,
    // after the file was created and written, as in containerd (which stops there). Its data
    // takes long to write, so other workers make the files after it meanwhile.
    let long_key = format!("SCHILY.xattr.user.{}", "k".repeat(300));
    let data = vec![b'd'; 1000 << 10];
    let t = many(Tar::new().dir("a/").dir("b/"), "a", 40);
    let t = t.pax(&[(long_key.as_str(), b"v")]).file("a/bad", &data);
    let t = many(t, "a", 40)
        .dir("a/later-dir/")
        .symlink("m1", "a/later-link");
    let layer = many(t, "b", 40).finish();
    let (sb, res) = same_for_all_threads(&layer, WhiteoutMode::Remove, &none);
    let err = res.unwrap_err();
    assert!(
        err.contains("set xattr on ROOT/a/bad"),
        "unexpected error: {err}"
    );
    assert_eq!(fs::read(sb.p("a/bad")).unwrap(), data);
    assert!(sb.p("a/m39").exists());
    assert_eq!(
        fs::read_dir(sb.p("a")).unwrap().count(),
        41,
        "40 files and the failing one, nothing after it"
    );
    assert_eq!(fs::read_dir(sb.p("b")).unwrap().count(), 0);
}

#[test]
fn a_parent_redirected_by_a_later_symlink() {
    require_root!();
    let t = many(Tar::new().dir("a/").dir("b/"), "a", 30).file("a/f1", b"1");
    // `a` becomes a symlink to `b`: the next `a/...` entries land in `b`.
    let t = many(t, "b", 5).symlink("b", "a").file("a/f2", b"2");
    let t = many(t, "a", 10).file("c", b"file c");
    // `c/x` under a file: the apply fails there (ENOTDIR), as containerd's mkparent does.
    let layer = many(t, "b", 5)
        .file("c/x", b"x")
        .file("after", b"no")
        .finish();
    let (sb, res) = same_for_all_threads(&layer, WhiteoutMode::Remove, &none);
    assert!(res.is_err());
    assert!(fs::symlink_metadata(sb.p("a")).unwrap().is_symlink());
    assert_eq!(fs::read(sb.p("b/f2")).unwrap(), b"2");
    assert!(sb.p("b/m9").exists() && !sb.p("after").exists());
}

/// Random layers over a small set of names: every kind of entry, colliding, replacing,
/// whiting out and linking each other, a few failing.
#[test]
fn random_layers_give_the_same_tree_and_error() {
    require_root!();
    let dirs = ["", "d0", "d0/s", "d1", "d2"];
    let names = ["f0", "f1", "f2", "f3", "s", "d1", "x"];
    let seeds: u64 = std::env::var("THREADS_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150);
    for seed in 0..seeds {
        let mut rng = Rng::new(seed);
        let mut t = Tar::new();
        for _ in 0..(20 + rng.below(150)) {
            let dir = *rng.pick(&dirs);
            let name = *rng.pick(&names);
            let path = if dir.is_empty() {
                name.to_string()
            } else {
                format!("{dir}/{name}")
            };
            t = match rng.below(40) {
                0..=22 => {
                    let mut h = Header::new(b'0', &path);
                    h.mode = *rng.pick(&[0o644, 0o755, 0o600, 0o4755]);
                    h.uid = rng.below(3) as i64;
                    h.mtime = 1_500_000_000 + rng.below(1000) as i64;
                    let len = rng.below(3000) as usize;
                    let data = rng.bytes(len);
                    t.entry(h, &data)
                }
                23..=26 => t.dir(&format!("{path}/")),
                27..=28 => {
                    let target = *rng.pick(&TARGETS);
                    t.symlink(target, &path)
                }
                29..=30 => t.link(
                    &format!("{}/{}", rng.pick(&dirs[1..]), rng.pick(&names)),
                    &path,
                ),
                31..=33 => {
                    let wh = if dir.is_empty() {
                        format!(".wh.{name}")
                    } else {
                        format!("{dir}/.wh.{name}")
                    };
                    t.file(&wh, b"")
                }
                34 => {
                    let opq = if dir.is_empty() {
                        ".wh..wh..opq".to_string()
                    } else {
                        format!("{dir}/.wh..wh..opq")
                    };
                    t.file(&opq, b"")
                }
                35 if rng.chance(30) => {
                    let key = format!("SCHILY.xattr.user.{}", "k".repeat(300));
                    t.pax(&[(key.as_str(), b"v")]).file(&path, b"refused")
                }
                35..=36 => t
                    .pax(&[("SCHILY.xattr.user.note", b"n")])
                    .file(&path, b"with xattr"),
                _ => {
                    // A run of files in one directory: files in flight for what follows.
                    for i in 0..rng.below(40) {
                        t = t.file(format!("{dir}/r{i}").trim_start_matches('/'), b"run");
                    }
                    t
                }
            };
        }
        let layer = t.finish();
        let whiteouts = if seed % 3 == 2 {
            WhiteoutMode::Overlay
        } else {
            WhiteoutMode::Remove
        };
        let setup = |root: &Path| {
            fs::create_dir_all(root.join("d0/s")).unwrap();
            fs::create_dir_all(root.join("d1")).unwrap();
            fs::write(root.join("d1/f0"), b"lower").unwrap();
            fs::write(root.join("f3"), b"lower").unwrap();
        };
        let _ = std::panic::catch_unwind(|| same_for_all_threads(&layer, whiteouts, &setup))
            .map_err(|e| {
                panic!(
                    "seed {seed}: {}",
                    e.downcast_ref::<String>().cloned().unwrap_or_default()
                )
            });
    }
}

/// Files in many directories (each run of one directory may hold its descriptor while in
/// flight) apply with 4 threads under a limit of 128 open files, in a child process.
#[test]
fn many_directories_under_a_low_fd_limit() {
    const TEST: &str = "many_directories_under_a_low_fd_limit";
    const CHILD: &str = "LAYERDIFF_THREADS_TEST_CHILD";
    let mut t = Tar::new();
    for d in 0..1500 {
        t = t
            .dir(&format!("d{d}/"))
            .file(&format!("d{d}/a"), b"a")
            .file(&format!("d{d}/b"), b"b");
    }
    let layer = t.finish();
    if let Some(root) = std::env::var_os(CHILD) {
        use rustix::process::{setrlimit, Resource, Rlimit};
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(128),
                maximum: Some(128),
            },
        )
        .unwrap();
        let opts = ApplyOptions {
            unpack_threads: 4,
            ..ApplyOptions::default()
        };
        match apply(Path::new(&root), layer.as_slice(), &opts) {
            Ok(_) => println!("CHILD-OK"),
            Err(e) => println!("CHILD-ERR {}", e.chain_message()),
        }
        return;
    }
    require_root!();
    let sb = Sandbox::new();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD, sb.root())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("CHILD-OK"), "child: {text}");
    assert_eq!(fs::read_dir(sb.root()).unwrap().count(), 1500);
    assert_eq!(fs::read(sb.p("d1499/b")).unwrap(), b"b");
}
