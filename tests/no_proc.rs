//! Apply and diff without `/proc` (issue 10): the CLI run in a mount namespace with an empty
//! tmpfs over `/proc` reaches FIFOs, devices, hard links and symlinks by directory and name
//! (fchmodat2, *xattrat) and makes the same tree, and the same layer, as with `/proc`.
//!
//! The fallback ladder is tested with the real thing: a seccomp filter (installed in the child
//! before it runs `unshare`) that answers ENOSYS to fchmodat2 and the *xattrat calls, as on a
//! kernel older than 6.6 / 6.13. With procfs on `/proc` the calls then go through
//! `/proc/self/fd` (the same tree again); with neither, or with a fake `/proc` (a tmpfs of
//! symlinks that would redirect them), the CLI fails with one line naming what is missing and
//! never reads or writes by full path. (The filter names the architecture, so the file is
//! for x86-64 and aarch64, layerdiff's targets.)
#![cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]

mod common;

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::require_root;
use common::tar::{Header, Tar};
use common::tree::{comparable_snapshot, diff_snapshots, set_times, snapshot_tree};

const BIN: &str = env!("CARGO_BIN_EXE_layerdiff");

/// A version 2 `security.capability` (cap_net_bind_service permitted).
const CAP: &[u8] = &[1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

/// What the CLI finds on `/proc`.
#[derive(Clone, Copy, Debug)]
enum Proc {
    /// The host's procfs.
    Real,
    /// An empty tmpfs.
    Empty,
    /// A tmpfs whose `self/fd/N` (N < 64) are symlinks to the directory `$VICTIM`: what a
    /// fallback that trusted any `/proc` would chmod or set xattrs on.
    Fake,
}

/// Whether fchmodat2 and the *xattrat calls answer ENOSYS (a seccomp filter).
#[derive(Clone, Copy, Debug, PartialEq)]
enum AtCalls {
    Kernel,
    Enosys,
}

/// Run the CLI with `args` in its own mount namespace, with `proc` on `/proc`.
fn layerdiff<S: AsRef<OsStr>>(
    args: &[S],
    proc: Proc,
    at: AtCalls,
    victim: Option<&Path>,
) -> Output {
    let script = match proc {
        Proc::Real => r#"exec "$0" "$@""#,
        Proc::Empty => r#"mount -t tmpfs none /proc && exec "$0" "$@""#,
        Proc::Fake => {
            r#": "${VICTIM:?}" && mount -t tmpfs none /proc && mkdir -p /proc/self/fd && i=0 &&
            while [ $i -lt 64 ]; do ln -s "$VICTIM" /proc/self/fd/$i; i=$((i+1)); done &&
            exec "$0" "$@""#
        }
    };
    let mut c = Command::new("unshare");
    c.args(["-m", "sh", "-c", script, BIN]).args(args);
    c.env_remove("SOURCE_DATE_EPOCH");
    if let Some(v) = victim {
        c.env("VICTIM", v);
    }
    if at == AtCalls::Enosys {
        // SAFETY: the closure runs in the forked child before exec; it only builds an array
        // on its stack and makes two system calls (async-signal-safe).
        unsafe {
            c.pre_exec(deny_at_calls);
        }
    }
    c.output().unwrap()
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7;

/// Install a seccomp filter answering ENOSYS to fchmodat2 (452) and setxattrat, getxattrat,
/// listxattrat, removexattrat (463-466), as a kernel without them does.
fn deny_at_calls() -> io::Result<()> {
    use libc::{sock_filter, sock_fprog};
    let stmt = |code: u32, k: u32| sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jeq = |k: u32, jt: u8, jf: u8| sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    };
    let load = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let ret = libc::BPF_RET | libc::BPF_K;
    let mut prog = [
        stmt(load, 4), // seccomp_data.arch
        jeq(AUDIT_ARCH, 1, 0),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
        stmt(load, 0), // seccomp_data.nr
        jeq(452, 5, 0),
        jeq(463, 4, 0),
        jeq(464, 3, 0),
        jeq(465, 2, 0),
        jeq(466, 1, 0),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
        stmt(ret, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
    ];
    let fprog = sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: plain system calls; `fprog` points to `prog`, both alive for the call.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
        let filter = &fprog as *const sock_fprog;
        if libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, 0, filter) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[track_caller]
fn assert_ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what}: {:?}, stderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The CLI failed with exit code 1 and one `layerdiff: ` line, which it returns.
#[track_caller]
fn assert_one_line_failure(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "not one line: {err:?}");
    assert!(err.starts_with("layerdiff: "), "{err:?}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// A PAX header's `SCHILY.xattr.` records.
fn xattrs<'a>(kv: &[(&'a str, &'a [u8])]) -> Vec<(String, &'a [u8])> {
    kv.iter()
        .map(|(k, v)| (format!("SCHILY.xattr.{k}"), *v))
        .collect()
}

fn with_pax(tar: Tar, records: &[(String, &[u8])], hd: Header, data: &[u8]) -> Tar {
    let r: Vec<(&str, &[u8])> = records.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    tar.pax(&r).entry(hd, data)
}

fn hdr(typeflag: u8, name: &str, mode: u64, uid: i64, gid: i64) -> Header {
    Header {
        mode,
        uid,
        gid,
        mtime: 1_500_000_000 + uid,
        ..Header::new(typeflag, name)
    }
}

/// Every kind of node that apply reaches by name (FIFO, devices, hard links to a file and to
/// a FIFO, a symlink), with owners, modes, nanosecond times and xattrs (`user.*`, which the
/// kernel refuses on special files and apply then skips as containerd does,
/// `security.capability`, and a refused `trusted.*`), and a file whose parents are missing.
/// `overlay` adds a whiteout and an opaque directory.
fn layer(overlay: bool) -> Vec<u8> {
    let mut t = Tar::new();
    let dx = xattrs(&[("user.dir", b"D"), ("security.capability", CAP)]);
    t = with_pax(t, &dx, hdr(b'5', "d/", 0o750, 1001, 1002), b"");
    let mut fx = xattrs(&[
        ("user.f", b"F"),
        ("security.capability", CAP),
        ("trusted.refused", b"T"),
    ]);
    fx.push(("mtime".into(), b"1500000001.123456789"));
    t = with_pax(t, &fx, hdr(b'0', "d/f", 0o4755, 1003, 1004), b"hello");
    let px = xattrs(&[("user.p", b"P"), ("security.capability", CAP)]);
    t = with_pax(t, &px, hdr(b'6', "d/p", 0o640, 1005, 1006), b"");
    let cx = xattrs(&[("security.capability", CAP)]);
    let c = Header {
        devmajor: 1,
        devminor: 3,
        ..hdr(b'3', "d/c", 0o620, 1007, 1008)
    };
    t = with_pax(t, &cx, c, b"");
    let b = Header {
        devmajor: 7,
        devminor: 0,
        ..hdr(b'4', "d/b", 0o660, 1009, 1010)
    };
    t = t.entry(b, b"");
    // Hard links to a file and a FIFO of their own: a link entry's lchown would drop the
    // target's security.capability (the kernel does on every chown), as in containerd.
    t = t.entry(hdr(b'0', "d/g", 0o644, 1015, 1016), b"g");
    t = t.entry(hdr(b'6', "d/q", 0o640, 1017, 1018), b"");
    let hg = Header {
        linkname: b"d/g".to_vec(),
        ..hdr(b'1', "d/hg", 0o4755, 1015, 1016)
    };
    t = t.entry(hg, b"");
    let hq = Header {
        linkname: b"d/q".to_vec(),
        ..hdr(b'1', "d/hq", 0o604, 1017, 1018)
    };
    t = t.entry(hq, b"");
    let sx = xattrs(&[("user.s", b"S"), ("security.capability", CAP)]);
    let s = Header {
        linkname: b"f".to_vec(),
        ..hdr(b'2', "d/s", 0o777, 1011, 1012)
    };
    t = with_pax(t, &sx, s, b"");
    t = t.entry(hdr(b'0', "m/n/g", 0o600, 1013, 1014), b"g");
    if overlay {
        t = t.entry(hdr(b'0', "d/.wh.gone", 0o644, 0, 0), b"");
        t = t.entry(hdr(b'5', "o/", 0o755, 0, 0), b"");
        t = t.entry(hdr(b'0', "o/.wh..wh..opq", 0o644, 0, 0), b"");
    }
    t.finish()
}

/// An overlay lowerdir / aufs branch with the parents `m/n` of the layer's `m/n/g`, their
/// owners, modes, times and xattrs for apply to copy (all but `trusted.*`).
fn make_lower(dir: &Path) {
    let m = dir.join("m");
    let n = m.join("n");
    fs::create_dir_all(&n).unwrap();
    xattr::set(&m, "user.lower", b"L").unwrap();
    xattr::set(&m, "security.capability", CAP).unwrap();
    xattr::set(&m, "trusted.lower", b"T").unwrap();
    xattr::set(&n, "user.n", b"N").unwrap();
    rustix::fs::chown(&m, Some(uid(2001)), Some(gid(2002))).unwrap();
    rustix::fs::chown(&n, Some(uid(2003)), Some(gid(2004))).unwrap();
    rustix::fs::chmod(&m, rustix::fs::Mode::from_raw_mode(0o710)).unwrap();
    rustix::fs::chmod(&n, rustix::fs::Mode::from_raw_mode(0o751)).unwrap();
    set_times(&n, 1_400_000_001, 5);
    set_times(&m, 1_400_000_000, 7);
}

fn uid(n: u32) -> rustix::fs::Uid {
    rustix::fs::Uid::from_raw(n)
}

fn gid(n: u32) -> rustix::fs::Gid {
    rustix::fs::Gid::from_raw(n)
}

/// How a scenario applies the layer.
struct Scenario {
    name: &'static str,
    whiteouts: &'static str,
    with_lower: bool,
}

const SCENARIOS: [Scenario; 3] = [
    Scenario {
        name: "plain",
        whiteouts: "remove",
        with_lower: false,
    },
    Scenario {
        name: "overlay",
        whiteouts: "overlay",
        with_lower: true,
    },
    Scenario {
        name: "aufs",
        whiteouts: "aufs",
        with_lower: true,
    },
];

struct Work {
    dir: tempfile::TempDir,
}

impl Work {
    fn new() -> Work {
        let w = Work {
            dir: tempfile::tempdir().unwrap(),
        };
        make_lower(&w.p("lower"));
        fs::write(w.p("plain.tar"), layer(false)).unwrap();
        fs::write(w.p("overlay.tar"), layer(true)).unwrap();
        w
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `apply` arguments for the scenario's layer onto a fresh directory `root` (under the
    /// work dir).
    fn apply_args(&self, sc: &Scenario, root: &str) -> (PathBuf, Vec<OsString>) {
        let root = self.p(root);
        fs::create_dir(&root).unwrap();
        let layer = if sc.whiteouts == "remove" {
            "plain.tar"
        } else {
            "overlay.tar"
        };
        let mut args: Vec<OsString> = ["apply", "-q", "--whiteouts", sc.whiteouts]
            .map(OsString::from)
            .into();
        if sc.with_lower {
            args.extend(["--parent".into(), self.p("lower").into()]);
        }
        args.extend([self.p(layer).into(), root.clone().into()]);
        (root, args)
    }

    /// Apply the scenario's layer onto a fresh `root`.
    fn apply(&self, sc: &Scenario, root: &str, proc: Proc, at: AtCalls) -> (PathBuf, Output) {
        let (root, args) = self.apply_args(sc, root);
        (root, layerdiff(&args, proc, at, None))
    }
}

fn xattr_of(p: &Path, name: &str) -> Option<Vec<u8>> {
    xattr::get(p, name).unwrap()
}

/// What the apply with `/proc` made is what the layer says (so that comparing the others
/// with it means something).
fn check_reference(sc: &Scenario, root: &Path) {
    use std::os::unix::fs::MetadataExt;
    let md = |rel: &str| fs::symlink_metadata(root.join(rel)).unwrap();
    let d = root.join("d");
    assert_eq!(xattr_of(&d, "user.dir").as_deref(), Some(&b"D"[..]));
    assert_eq!(
        xattr_of(&d.join("f"), "security.capability").as_deref(),
        Some(CAP)
    );
    assert_eq!(xattr_of(&d.join("f"), "trusted.refused"), None);
    assert_eq!(
        xattr_of(&d.join("p"), "security.capability").as_deref(),
        Some(CAP)
    );
    assert_eq!(xattr_of(&d.join("p"), "user.p"), None);
    assert_eq!(
        xattr_of(&d.join("c"), "security.capability").as_deref(),
        Some(CAP)
    );
    assert_eq!(
        xattr_of(&d.join("s"), "security.capability").as_deref(),
        Some(CAP)
    );
    assert_eq!((md("d/f").mode(), md("d/f").uid()), (0o104755, 1003));
    assert_eq!(md("d/f").mtime_nsec(), 123_456_789);
    assert_eq!((md("d/p").mode(), md("d/p").gid()), (0o010640, 1006));
    assert_eq!(md("d/hg").ino(), md("d/g").ino());
    assert_eq!(md("d/hq").ino(), md("d/q").ino());
    // A hard link's header mode is set on what it names.
    assert_eq!(md("d/g").mode(), 0o104755);
    assert_eq!((md("d/q").mode(), md("d/q").gid()), (0o010604, 1018));
    assert_eq!(
        (md("d/c").mode(), md("d/c").rdev()),
        (0o020620, rustix::fs::makedev(1, 3))
    );
    assert_eq!((md("d/b").mode(), md("d/b").uid()), (0o060660, 1009));
    assert_eq!((md("d/s").uid(), md("d/s").mtime()), (1011, 1_500_001_011));
    if sc.with_lower {
        let m = root.join("m");
        // The mtime is the lower's until m/n is made in it (as in containerd's mkparent);
        // the atime stays.
        assert_eq!(
            (md("m").mode(), md("m").uid(), md("m").atime()),
            (0o040710, 2001, 1_400_000_000)
        );
        assert_eq!((md("m/n").mode(), md("m/n").gid()), (0o040751, 2004));
        assert_eq!(xattr_of(&m, "user.lower").as_deref(), Some(&b"L"[..]));
        assert_eq!(xattr_of(&m, "security.capability").as_deref(), Some(CAP));
        assert_eq!(xattr_of(&m, "trusted.lower"), None);
        assert_eq!(xattr_of(&m.join("n"), "user.n").as_deref(), Some(&b"N"[..]));
    } else {
        assert_eq!(md("m").mode(), 0o040755);
    }
}

/// [`comparable_snapshot`] less the mtimes apply does not set: of the parents made for
/// `m/n/g` (when the next component or the file was made in them) and of an overlay whiteout
/// (when it was made, as containerd leaves it).
fn comparable(root: &Path) -> common::tree::Snapshot {
    let mut s = comparable_snapshot(root);
    for made_now in ["m", "m/n", "d/gone"] {
        if let Some(m) = s.get_mut(Path::new(made_now)) {
            m.mtime = (0, 0);
        }
    }
    s
}

#[test]
fn apply_without_proc_makes_the_same_tree_as_with_it() {
    require_root!();
    let w = Work::new();
    for sc in &SCENARIOS {
        let (reference, o) = w.apply(
            sc,
            &format!("{}-proc", sc.name),
            Proc::Real,
            AtCalls::Kernel,
        );
        assert_ok(&o, sc.name);
        check_reference(sc, &reference);
        let want = comparable(&reference);
        for (proc, at) in [
            (Proc::Empty, AtCalls::Kernel),
            (Proc::Real, AtCalls::Enosys),
        ] {
            let (root, o) = w.apply(sc, &format!("{}-{proc:?}-{at:?}", sc.name), proc, at);
            assert_ok(
                &o,
                &format!("{} with {proc:?} /proc, {at:?} *at calls", sc.name),
            );
            let d = diff_snapshots(&want, &comparable(&root));
            assert!(
                d.is_empty(),
                "{} with {proc:?} /proc, {at:?} *at calls differs from the apply with /proc:\n  {}",
                sc.name,
                d.join("\n  ")
            );
        }
    }
}

#[test]
fn apply_with_neither_at_calls_nor_procfs_fails_with_one_line() {
    require_root!();
    let w = Work::new();
    // d/ and d/f are made by fd; d/p is the first entry set by name.
    let (root, o) = w.apply(&SCENARIOS[0], "xattrs", Proc::Empty, AtCalls::Enosys);
    let err = assert_one_line_failure(&o);
    let want = format!(
        "layerdiff: set xattr on {} (key security.capability): needs the setxattrat system call",
        root.join("d/p").display()
    );
    assert!(
        err.starts_with(&want) && err.contains("procfs mounted on /proc"),
        "{err}"
    );

    // A FIFO without xattrs: its chmod is the first call that needs either.
    let fifo = Tar::new().entry(hdr(b'6', "p", 0o640, 0, 0), b"").finish();
    let fifo_tar = w.p("fifo.tar");
    fs::write(&fifo_tar, fifo).unwrap();
    let root = w.p("chmod");
    fs::create_dir(&root).unwrap();
    let args = [
        os("apply"),
        os("-q"),
        fifo_tar.as_os_str(),
        root.as_os_str(),
    ];
    let err = assert_one_line_failure(&layerdiff(&args, Proc::Empty, AtCalls::Enosys, None));
    let want = format!(
        "layerdiff: chmod {}: needs the fchmodat2 system call",
        root.join("p").display()
    );
    assert!(err.starts_with(&want), "{err}");

    // A parent copied from a lower: listing the lower's xattrs.
    let only_parent = Tar::new()
        .entry(hdr(b'0', "m/n/g", 0o600, 0, 0), b"g")
        .finish();
    let parent_tar = w.p("parent.tar");
    fs::write(&parent_tar, only_parent).unwrap();
    let root = w.p("parent-only");
    fs::create_dir(&root).unwrap();
    let lower = w.p("lower");
    let args = [
        os("apply"),
        os("-q"),
        os("--whiteouts"),
        os("overlay"),
        os("--parent"),
        lower.as_os_str(),
        parent_tar.as_os_str(),
        root.as_os_str(),
    ];
    let err = assert_one_line_failure(&layerdiff(&args, Proc::Empty, AtCalls::Enosys, None));
    let want = format!(
        "layerdiff: list xattrs of {}: needs the listxattrat system call",
        lower.join("m").display()
    );
    assert!(err.starts_with(&want), "{err}");
}

#[test]
fn apply_does_not_trust_a_fake_proc() {
    require_root!();
    let w = Work::new();
    let victim = w.p("victim");
    fs::create_dir(&victim).unwrap();
    for name in ["p", "q", "c", "s", "hq", "m"] {
        fs::write(victim.join(name), b"victim").unwrap();
    }
    let mut before = Default::default();
    snapshot_tree(&victim, Path::new(""), &mut before);
    for sc in &SCENARIOS {
        let (_, args) = w.apply_args(sc, &format!("fake-{}", sc.name));
        let o = layerdiff(&args, Proc::Fake, AtCalls::Enosys, Some(&victim));
        let err = assert_one_line_failure(&o);
        assert!(
            err.contains("procfs mounted on /proc"),
            "{}: {err}",
            sc.name
        );
        // With the kernel's *at calls, /proc is not looked at.
        let (_, args) = w.apply_args(sc, &format!("fake-at-{}", sc.name));
        let o = layerdiff(&args, Proc::Fake, AtCalls::Kernel, Some(&victim));
        assert_ok(&o, sc.name);
    }
    let mut after = Default::default();
    snapshot_tree(&victim, Path::new(""), &mut after);
    let d = diff_snapshots(&before, &after);
    assert!(
        d.is_empty(),
        "the fake /proc's target changed:\n  {}",
        d.join("\n  ")
    );
}

/// `layerdiff diff` of `lower` and `upper` (or, with `upperdir`, of the upperdir over
/// `lower`) with every xattr, uncompressed, into `out`.
fn diff(
    lower: &Path,
    upper: &Path,
    upperdir: bool,
    out: &Path,
    proc: Proc,
    at: AtCalls,
    victim: &Path,
) -> Output {
    let mut args: Vec<&OsStr> = vec![
        os("diff"),
        os("-q"),
        os("--compression"),
        os("none"),
        os("--xattrs"),
        os("all"),
    ];
    if upperdir {
        args.extend([os("--upperdir"), upper.as_os_str(), lower.as_os_str()]);
    } else {
        args.extend([lower.as_os_str(), upper.as_os_str()]);
    }
    args.extend([os("-o"), out.as_os_str()]);
    layerdiff(&args, proc, at, Some(victim))
}

#[test]
fn diff_without_proc_reads_by_directory_and_name_or_fails_with_one_line() {
    require_root!();
    let w = Work::new();
    let (plain, o) = w.apply(&SCENARIOS[0], "plain-upper", Proc::Real, AtCalls::Kernel);
    assert_ok(&o, "apply");
    let (upperdir, o) = w.apply(&SCENARIOS[1], "upperdir", Proc::Real, AtCalls::Kernel);
    assert_ok(&o, "apply");
    let empty = w.p("empty");
    fs::create_dir(&empty).unwrap();
    let lower = w.p("lower");
    // What a fake /proc's fd links point to: names like the upper's, readable, with xattrs.
    let victim = w.p("victim");
    fs::create_dir(&victim).unwrap();
    for name in ["d", "f", "p", "c", "s", "m", "o"] {
        fs::write(victim.join(name), b"victim").unwrap();
        xattr::set(victim.join(name), "user.victim", b"V").unwrap();
    }

    for (what, lower, upper, is_upperdir) in [
        ("walking diff", &empty, &plain, false),
        ("upperdir diff", &lower, &upperdir, true),
    ] {
        let out = |name: &str| w.p(&format!("{what}-{name}.tar"));
        let o = diff(
            lower,
            upper,
            is_upperdir,
            &out("proc"),
            Proc::Real,
            AtCalls::Kernel,
            &victim,
        );
        assert_ok(&o, what);
        let want = fs::read(out("proc")).unwrap();
        // The layer carries the xattrs read from FIFOs, devices and symlinks.
        let cap_records = want
            .windows(b"SCHILY.xattr.security.capability".len())
            .filter(|w| *w == b"SCHILY.xattr.security.capability")
            .count();
        assert!(cap_records >= 5, "{what}: {cap_records} capability records");
        for (proc, at) in [
            (Proc::Empty, AtCalls::Kernel),
            (Proc::Real, AtCalls::Enosys),
        ] {
            let name = format!("{proc:?}-{at:?}");
            let o = diff(lower, upper, is_upperdir, &out(&name), proc, at, &victim);
            assert_ok(&o, &format!("{what} with {proc:?} /proc, {at:?} *at calls"));
            assert!(
                fs::read(out(&name)).unwrap() == want,
                "{what} with {proc:?} /proc, {at:?} *at calls wrote another layer"
            );
        }
        // Neither: one line, never a read by full path (which a rename could redirect).
        for proc in [Proc::Empty, Proc::Fake] {
            let o = diff(
                lower,
                upper,
                is_upperdir,
                &out("neither"),
                proc,
                AtCalls::Enosys,
                &victim,
            );
            let err = assert_one_line_failure(&o);
            assert!(
                err.contains("xattr")
                    && err.contains("xattrat system call")
                    && err.contains("procfs mounted on /proc"),
                "{what} with {proc:?} /proc: {err}"
            );
        }
    }
}
