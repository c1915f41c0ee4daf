//! Deep directory chains in an overlay upperdir (issue 11's upperdir compare under issue 10's
//! rule that no container can exhaust our resources): a container can make thousands of
//! nested directories (mkdir relative, past PATH_MAX); `diff --upperdir` must still succeed
//! under a low `RLIMIT_NOFILE` (a C caller's 1024, here 256) and write the double walk's bytes.
//! Both sides run the CLI under `prlimit --nofile=256:256`.

mod common;

use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::process::Command;

use common::overlay::mount_overlay;
use common::require_root;
use common::tar::entry_names;
use rustix::fs::{Mode, OFlags, CWD};

const NOFILE: &str = "--nofile=256:256";

fn open_dir(dir: impl AsFd, name: &str) -> OwnedFd {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .unwrap_or_else(|e| panic!("open {name}: {e}"))
}

fn write_file(dir: impl AsFd, name: &str, data: &[u8]) {
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .unwrap_or_else(|e| panic!("create {name}: {e}"));
    assert_eq!(rustix::io::write(&fd, data).unwrap(), data.len());
}

/// Walk down (making what is missing) `depth` levels named `name` below `top`, relative to each
/// level's descriptor (the path exceeds PATH_MAX), calling `at(level, fd)` at every level
/// (1-based) after it is made.
fn chain(top: OwnedFd, name: &str, depth: usize, mut at: impl FnMut(usize, &OwnedFd)) {
    let mut fd = top;
    for level in 1..=depth {
        match rustix::fs::mkdirat(&fd, name, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => panic!("mkdir level {level}: {e}"),
        }
        fd = open_dir(&fd, name);
        at(level, &fd);
    }
}

/// Run the CLI's `diff` under the low descriptor limit; its stderr on failure.
fn diff(args: &[&std::ffi::OsStr], out: &Path) -> Result<Vec<u8>, String> {
    let o = Command::new("prlimit")
        .arg(NOFILE)
        .arg(env!("CARGO_BIN_EXE_layerdiff"))
        .args(["diff", "--compression", "none", "--source-date-epoch", "0"])
        .args(args)
        .arg("-o")
        .arg(out)
        .output()
        .expect("run prlimit (util-linux)");
    if !o.status.success() {
        return Err(String::from_utf8_lossy(&o.stderr).into_owned());
    }
    Ok(fs::read(out).unwrap())
}

/// The upperdir compare and the double walk of (lower, merged), both under the low limit: the
/// same bytes, and the layer holds `want` (paths relative to the root, no leading `/`).
fn check(tmp: &Path, lower: &Path, upper: &Path, merged: &Path, want: &[String]) {
    let from_upper = diff(
        &["--upperdir".as_ref(), upper.as_os_str(), lower.as_os_str()],
        &tmp.join("upper.tar"),
    )
    .unwrap_or_else(|e| panic!("diff --upperdir under {NOFILE}: {e}"));
    let walked = diff(
        &[lower.as_os_str(), merged.as_os_str()],
        &tmp.join("walk.tar"),
    )
    .unwrap_or_else(|e| panic!("double walk under {NOFILE}: {e}"));
    let names = entry_names(&from_upper);
    for w in want {
        assert!(
            names.iter().any(|n| n.trim_end_matches('/') == w),
            "layer lacks {}… ({} bytes); has {} entries",
            &w[..w.len().min(40)],
            w.len(),
            names.len()
        );
    }
    assert!(
        from_upper == walked,
        "upperdir layer ({} bytes, {} entries) differs from the double walk's ({} bytes, {} entries)",
        from_upper.len(),
        names.len(),
        walked.len(),
        entry_names(&walked).len()
    );
}

/// `d/d/…/d/` `levels` deep, then `rest`.
fn deep(levels: usize, rest: &str) -> String {
    "d/".repeat(levels) + rest
}

struct Overlay {
    tmp: tempfile::TempDir,
}

impl Overlay {
    fn new() -> Overlay {
        let tmp = tempfile::tempdir().unwrap();
        for d in ["lower", "upper", "work", "merged"] {
            fs::create_dir(tmp.path().join(d)).unwrap();
        }
        Overlay { tmp }
    }
    fn path(&self, d: &str) -> std::path::PathBuf {
        self.tmp.path().join(d)
    }
}

/// A 3,000-level chain: 40 levels shared with the lower (files there modified, deleted, kept),
/// the rest new in the upper, with files at several depths, and a 40-level new side chain under
/// a lower directory whose later names need its lower directory again.
#[test]
fn deep_upperdir_chain_under_a_low_fd_limit() {
    require_root!();
    let o = Overlay::new();
    let (lower, upper, merged) = (o.path("lower"), o.path("upper"), o.path("merged"));
    chain(
        open_dir(CWD, lower.to_str().unwrap()),
        "d",
        40,
        |level, fd| {
            if level % 10 == 0 {
                write_file(fd, "z", b"lower");
                write_file(fd, "keep", b"lower");
            }
        },
    );
    let _m = mount_overlay(
        &lower,
        &upper,
        &o.path("work"),
        &merged,
        "redirect_dir=off,metacopy=off,index=off",
    );
    let mut want = Vec::new();
    chain(
        open_dir(CWD, merged.to_str().unwrap()),
        "d",
        3000,
        |level, fd| {
            match level {
                // Modified (copied up) and deleted (a whiteout) lower files.
                10 | 30 => {
                    write_file(fd, "z", b"upper");
                    want.push(deep(level, "z"));
                }
                20 | 40 => {
                    rustix::fs::unlinkat(fd, "z", rustix::fs::AtFlags::empty()).unwrap();
                    want.push(deep(level, ".wh.z"));
                }
                5 | 39 | 41 | 1000 | 2999 | 3000 => {
                    write_file(fd, "f", b"new");
                    want.push(deep(level, "f"));
                }
                _ => {}
            }
            if level == 20 || level == 500 {
                // A new side chain deeper than the open window, then names after it ("z" > "n").
                let side = open_dir(
                    {
                        rustix::fs::mkdirat(fd, "n", Mode::from_raw_mode(0o755)).unwrap();
                        fd
                    },
                    "n",
                );
                chain(side, "n", 40, |l, f| {
                    if l == 40 {
                        write_file(f, "f", b"side");
                    }
                });
                want.push(deep(level, &("n/".repeat(41) + "f")));
            }
        },
    );
    check(o.tmp.path(), &lower, &upper, &merged, &want);
}

/// A deep lower chain with new directories at the bottom of the upper: returning from them
/// needs the lower directory of a level whose descriptors were closed and whose child has no
/// lower directory to reopen it through.
#[test]
fn deep_lower_chain_with_new_dirs_at_the_bottom() {
    require_root!();
    let o = Overlay::new();
    let (lower, upper, merged) = (o.path("lower"), o.path("upper"), o.path("merged"));
    const LOWER: usize = 1500;
    chain(
        open_dir(CWD, lower.to_str().unwrap()),
        "d",
        LOWER,
        |level, fd| {
            if level % 100 == 0 || level == LOWER {
                write_file(fd, "z", b"lower");
            }
        },
    );
    let _m = mount_overlay(
        &lower,
        &upper,
        &o.path("work"),
        &merged,
        "redirect_dir=off,metacopy=off,index=off",
    );
    let mut want = Vec::new();
    chain(
        open_dir(CWD, merged.to_str().unwrap()),
        "d",
        LOWER,
        |level, fd| {
            if level == LOWER || level == 700 {
                // New below the lower chain's level: "d" and "n" chains 100 deep, then the
                // level's own "z" (after both in name order) modified.
                rustix::fs::mkdirat(fd, "n", Mode::from_raw_mode(0o755)).unwrap();
                chain(open_dir(fd, "n"), "n", 100, |l, f| {
                    if l == 100 {
                        write_file(f, "f", b"new");
                    }
                });
                want.push(deep(level, &("n/".repeat(101) + "f")));
                if level == LOWER {
                    chain(open_dir(fd, "."), "d", 100, |l, f| {
                        if l == 100 {
                            write_file(f, "f", b"new");
                        }
                    });
                    want.push(deep(level + 100, "f"));
                }
                write_file(fd, "z", b"upper");
                want.push(deep(level, "z"));
            }
        },
    );
    check(o.tmp.path(), &lower, &upper, &merged, &want);
}
