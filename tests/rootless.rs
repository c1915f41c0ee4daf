//! Rootless apply (issue 12 part 2): the CLI run inside user namespaces this test makes,
//! applying into an upperdir that overlayfs then mounts with `userxattr` in that namespace;
//! the merged view must equal a rootful apply's (whiteouts, opaque dirs, owners, data).
//!
//! Two kinds of namespace, both really unprivileged on the host:
//! - a 65536-ID range (container 0 = host [`SHIFT`]), as rootless containerd runs: the
//!   test writes the maps itself (no newuidmap needed), the CLI runs as the namespace's root,
//!   i.e. host uid [`SHIFT`];
//! - one ID (`setpriv` to host nobody, then `unshare -Ur`), where most owners are unmapped.
//!
//! Needs root to set up, and an unprivileged overlay mount: without one the merged-view tests
//! say SKIP on stderr.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::require_root;
use common::tar::{Header, Tar};
use layerdiff::overlay_forms::{self, OverlayXattrs};
use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};

const BIN: &str = env!("CARGO_BIN_EXE_layerdiff");
/// Host ID of container ID 0 in the ranged namespace.
const SHIFT: u32 = 200_000;
const RANGE: u32 = 65_536;
/// Host nobody: the one-ID namespace's root.
const NOBODY: u32 = 65_534;

/// A work directory every namespace's users can reach, removed at the end.
struct Work {
    dir: tempfile::TempDir,
}

impl Work {
    fn new() -> Work {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        Work { dir }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// A new directory `rel` owned by host `uid`:`uid`.
    fn mkdir_owned(&self, rel: &str, uid: u32) -> PathBuf {
        let p = self.p(rel);
        fs::create_dir_all(&p).unwrap();
        std::os::unix::fs::chown(&p, Some(uid), Some(uid)).unwrap();
        p
    }
}

/// Run `script` with `sh -c` in a new user and mount namespace mapping container IDs
/// 0..RANGE to host SHIFT.., as the namespace's root.
fn in_ranged_userns(script: &str) -> Output {
    // unshare keeps its capabilities in the namespace across exec (--keep-caps) so that the
    // shell can become uid 0 there once the maps exist; it says "ready" and waits for them.
    let mut child = Command::new("unshare")
        .args(["--user", "--mount", "--keep-caps", "sh", "-c"])
        .arg(format!(
            "echo ready; read go; exec setpriv --reuid 0 --regid 0 --clear-groups sh -c '{}'",
            script.replace('\'', r"'\''")
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n", "unshare did not start");
    let pid = child.id();
    for map in ["uid_map", "gid_map"] {
        fs::write(format!("/proc/{pid}/{map}"), format!("0 {SHIFT} {RANGE}\n")).unwrap();
    }
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut out, &mut rest).unwrap();
    let mut o = child.wait_with_output().unwrap();
    o.stdout = rest;
    o
}

/// Run `script` as host nobody in `unshare -Ur`: one ID mapped (nobody = namespace root).
fn in_single_id_userns(script: &str) -> Output {
    Command::new("setpriv")
        .args([
            "--reuid",
            &NOBODY.to_string(),
            "--regid",
            &NOBODY.to_string(),
            "--clear-groups",
            "unshare",
            "-Urm",
            "sh",
            "-c",
            script,
        ])
        .output()
        .unwrap()
}

/// The CLI's apply of `layer` onto `root` with `flags`, in a one-ID namespace.
fn apply_single_id(layer: &Path, root: &Path, flags: &str) -> Output {
    in_single_id_userns(&format!(
        "{BIN} apply --quiet {flags} {} {}",
        layer.display(),
        root.display()
    ))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[track_caller]
fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status,
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stdout)
}

/// A shell listing of a tree: every path with type, owner, mode, size, link target, user.*
/// xattrs (overlay's own excepted) and a hash of the data; sorted.
fn listing_script(dir: &Path) -> String {
    format!(
        "cd {d} && l=$(find . -printf '%p %y %U:%G %m %s %l\\n') && echo \"$l\" | sort && \
         find . -type f -exec sha256sum {{}} + | sort && \
         getfattr -R -h -d -m '^user\\.' --absolute-names . 2>/dev/null | grep -v '^user.overlay' | grep -v '^$' || true",
        d = dir.display()
    )
}

/// The CLI's diff of `lower` and a merged view (as the Differ's compare of an overlay mount),
/// into `out/layer.tar`; times clamped, so that the directories apply created now compare equal.
fn diff_script(lower: &Path, merged: &Path, out: &Path) -> String {
    format!(
        "cd / && {BIN} diff --quiet --compression none --source-date-epoch 1600000000 {} {} -o {}/layer.tar >/dev/null",
        lower.display(),
        merged.display(),
        out.display()
    )
}

/// The layer the diff of [`diff_script`] wrote under `side` (rootful or rootless).
fn diffed(w: &Work, side: &str) -> Vec<u8> {
    fs::read(w.p(&format!("{side}/out/layer.tar"))).unwrap()
}

/// The test layer: an opaque directory, whiteouts of a file, a directory and a name in a
/// kept directory, owners other than root, a user.* xattr, a symlink, a hardlink, a FIFO.
/// `moot_whiteout` adds a whiteout in the opaque directory, before its marker: it hides
/// nothing, but overlayfs lists a 0/0 device there (readdir of an opaque directory does not
/// filter them), so only the xattr form, which drops it, has a clean merged view.
fn layer(moot_whiteout: bool) -> Vec<u8> {
    let owned = |mut h: Header, uid: i64, gid: i64| {
        h.uid = uid;
        h.gid = gid;
        h
    };
    let tar = Tar::new().entry(Header::new(b'5', "d/"), b"");
    let tar = if moot_whiteout {
        tar.entry(Header::new(b'0', "d/.wh.old"), b"")
    } else {
        tar
    };
    tar.entry(Header::new(b'0', "d/.wh..wh..opq"), b"")
        .entry(owned(Header::new(b'0', "d/new"), 1000, 1000), b"new in d\n")
        .entry(Header::new(b'0', ".wh.a"), b"")
        .entry(Header::new(b'0', ".wh.gone"), b"")
        .entry(Header::new(b'0', "keep/.wh.x"), b"")
        .pax(&[("SCHILY.xattr.user.note", b"kept")])
        .entry(owned(Header::new(b'0', "keep/y"), 0, 0), b"y\n")
        .entry(owned(Header::new(b'0', "c"), 1234, 5678), b"c data\n")
        .symlink("c", "c-link")
        .entry(
            owned(
                Header {
                    linkname: b"c".to_vec(),
                    ..Header::new(b'1', "c-hard")
                },
                1234,
                5678,
            ),
            b"",
        )
        .entry(owned(Header::new(b'6', "fifo"), 42, 43), b"")
        .entry(owned(Header::new(b'5', "e/"), 7, 8), b"")
        .finish()
}

/// The lower tree, owned by container root shifted by `shift`.
fn make_lower(dir: &Path, shift: u32) {
    for d in ["d", "keep", "gone/sub"] {
        fs::create_dir_all(dir.join(d)).unwrap();
    }
    for (f, data) in [
        ("a", "a\n"),
        ("b", "b\n"),
        ("d/old", "old\n"),
        ("d/other", "other\n"),
        ("keep/x", "x\n"),
        ("keep/z", "z\n"),
        ("gone/sub/f", "f\n"),
    ] {
        fs::write(dir.join(f), data).unwrap();
    }
    for e in walk(dir) {
        std::os::unix::fs::lchown(&e, Some(shift), Some(shift)).unwrap();
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.symlink_metadata().unwrap().is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The merged view of a rootful overlay apply of `layer` onto the lower tree.
fn rootful_merged(w: &Work, layer: &Path) -> String {
    let lower = w.p("rootful/lower");
    make_lower(&lower, 0);
    let upper = w.mkdir_owned("rootful/upper", 0);
    let work = w.mkdir_owned("rootful/work", 0);
    let merged = w.mkdir_owned("rootful/merged", 0);
    ok(&Command::new(BIN)
        .args(["apply", "--whiteouts", "overlay", "--quiet"])
        .arg(layer)
        .arg(&upper)
        .output()
        .unwrap());
    let o = Command::new("unshare")
        .args(["--mount", "sh", "-c"])
        .arg(format!(
            "mount -t overlay overlay -o lowerdir={},upperdir={},workdir={} {} && {} && {}",
            lower.display(),
            upper.display(),
            work.display(),
            merged.display(),
            listing_script(&merged),
            diff_script(&lower, &merged, &w.mkdir_owned("rootful/out", 0)),
        ))
        .output()
        .unwrap();
    ok(&o)
}

/// Apply `layer` rootless (ranged namespace) with `flags`, then mount and list the merged
/// view in that namespace: the upperdir as the upper layer, or (`as_lower`) as a lower one,
/// as a committed snapshot is used. None when the kernel refuses the mount (after saying
/// SKIP).
fn rootless_merged(w: &Work, layer: &Path, flags: &str, as_lower: bool) -> Option<String> {
    let lower = w.p("rootless/lower");
    make_lower(&lower, SHIFT);
    let upper = w.mkdir_owned("rootless/upper", SHIFT);
    let upper2 = w.mkdir_owned("rootless/upper2", SHIFT);
    let work = w.mkdir_owned("rootless/work", SHIFT);
    let merged = w.mkdir_owned("rootless/merged", SHIFT);
    ok(&in_ranged_userns(&format!(
        "{BIN} apply --whiteouts overlay --quiet {flags} {} {}",
        layer.display(),
        upper.display()
    )));
    let opts = if as_lower {
        format!(
            "lowerdir={}:{},upperdir={},workdir={},userxattr",
            upper.display(),
            lower.display(),
            upper2.display(),
            work.display()
        )
    } else {
        format!(
            "lowerdir={},upperdir={},workdir={},userxattr",
            lower.display(),
            upper.display(),
            work.display()
        )
    };
    let o = in_ranged_userns(&format!(
        "mount -t overlay overlay -o {opts} {m} || {{ echo MOUNT-REFUSED; exit 0; }}; {} && {}",
        listing_script(&merged),
        diff_script(&lower, &merged, &w.mkdir_owned("rootless/out", SHIFT)),
        m = merged.display()
    ));
    let out = ok(&o);
    if out.starts_with("MOUNT-REFUSED") {
        let _ = writeln!(
            std::io::stderr(),
            "SKIP: the kernel refuses an unprivileged overlay mount with userxattr: {}",
            text(&o.stderr)
        );
        return None;
    }
    Some(out)
}

fn write_layer(w: &Work, bytes: &[u8]) -> PathBuf {
    let p = w.p("layer.tar");
    fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn rootless_merged_view_equals_rootful() {
    require_root!();
    let w = Work::new();
    let layer = write_layer(&w, &layer(false));
    let want = rootful_merged(&w, &layer);
    // The rootful view has what the layer says: a check that the comparison can fail.
    assert!(want.contains("./c f 1234:5678 644 7"), "{want}");
    assert!(
        !want.contains("./a f") && !want.contains("./gone"),
        "{want}"
    );
    assert!(
        !want.contains("./d/old") && !want.contains("./d/other"),
        "{want}"
    );
    let Some(got) = rootless_merged(&w, &layer, "", false) else {
        return;
    };
    assert_eq!(got, want);
    // The compare of the merged view (as the Differ's of a rootless overlay mount) reads the
    // forms back: the same layer as rootful.
    let layer_back = diffed(&w, "rootful");
    let has = |name: &[u8]| layer_back.windows(name.len()).any(|w| w == name);
    assert!(
        has(b".wh.a\0") && has(b"d/new\0") && has(b"keep/.wh.x\0"),
        "diff lacks changes"
    );
    assert_eq!(diffed(&w, "rootless"), layer_back);

    // What auto picked on this kernel: 0/0 devices (mknod of them is allowed in a user
    // namespace since 5.8) and user.overlay.opaque.
    let upper = w.p("rootless/upper");
    let st = fs::symlink_metadata(upper.join("a")).unwrap();
    assert_eq!((st.mode() & 0o170000, st.rdev()), (0o020000, 0));
    assert_eq!(
        xattr::get(upper.join("d"), "user.overlay.opaque").unwrap(),
        Some(b"y".to_vec())
    );
    assert_eq!(
        xattr::get(upper.join("d"), "trusted.overlay.opaque").unwrap(),
        None
    );
    // Owners are the container's, shifted on the host.
    assert_eq!(fs::metadata(upper.join("c")).unwrap().uid(), SHIFT + 1234);
    assert_eq!(fs::metadata(upper.join("c")).unwrap().gid(), SHIFT + 5678);
}

#[test]
fn rootless_xattr_whiteouts_work_as_a_lower_layer() {
    require_root!();
    let w = Work::new();
    let clean = write_layer(&w, &layer(false));
    let want = rootful_merged(&w, &clean);
    let moot = w.p("moot.tar");
    fs::write(&moot, layer(true)).unwrap();
    let Some(got) = rootless_merged(&w, &moot, "--overlay-whiteout xattr", true) else {
        return;
    };
    assert_eq!(got, want);
    assert_eq!(diffed(&w, "rootless"), diffed(&w, "rootful"));

    let upper = w.p("rootless/upper");
    let st = fs::symlink_metadata(upper.join("a")).unwrap();
    assert!(st.is_file() && st.len() == 0, "{st:?}");
    assert!(xattr::get(upper.join("a"), "user.overlay.whiteout")
        .unwrap()
        .is_some());
    assert_eq!(
        xattr::get(&upper, "user.overlay.opaque").unwrap(),
        Some(b"x".to_vec())
    );
    // In the opaque d, the early whiteout of d/old was dropped rather than left as a file
    // overlayfs would show.
    assert!(!upper.join("d/old").exists());
    assert_eq!(
        xattr::get(upper.join("d"), "user.overlay.opaque").unwrap(),
        Some(b"y".to_vec())
    );
}

/// The shared readers (used by the upperdir compare) see both forms as apply wrote them.
#[test]
fn overlay_forms_read_back_what_apply_wrote() {
    require_root!();
    let w = Work::new();
    let layer = write_layer(&w, &layer(false));
    for (form, xattr_form) in [("chardev", false), ("xattr", true)] {
        let upper = w.mkdir_owned(&format!("forms-{form}"), SHIFT);
        ok(&in_ranged_userns(&format!(
            "{BIN} apply --whiteouts overlay --quiet --overlay-whiteout {form} {} {}",
            layer.display(),
            upper.display()
        )));
        let root = rfs::open(&upper, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        let marks = overlay_forms::opaque_value(&root, OverlayXattrs::User).unwrap();
        assert_eq!(
            marks.as_deref() == Some(b"x".as_slice()),
            xattr_form,
            "{form}"
        );
        let root_xw = marks.as_deref() == Some(overlay_forms::OPAQUE_HAS_XATTR_WHITEOUTS);
        for (name, want) in [("a", true), ("gone", true), ("c", false), ("fifo", false)] {
            let st = rfs::statat(&root, name, AtFlags::SYMLINK_NOFOLLOW).unwrap();
            let got = overlay_forms::is_whiteout(
                &root,
                name.as_bytes(),
                &st,
                OverlayXattrs::User,
                root_xw,
            )
            .unwrap();
            assert_eq!(got, want, "{form}: {name}");
            // The trusted namespace holds nothing here.
            if xattr_form {
                assert!(!overlay_forms::is_whiteout(
                    &root,
                    name.as_bytes(),
                    &st,
                    OverlayXattrs::Trusted,
                    false
                )
                .unwrap());
            }
        }
        let d = rfs::openat(
            &root,
            "d",
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
        )
        .unwrap();
        assert!(
            overlay_forms::is_opaque(&d, OverlayXattrs::User).unwrap(),
            "{form}"
        );
        assert!(
            !overlay_forms::is_opaque(&d, OverlayXattrs::Trusted).unwrap(),
            "{form}"
        );
        assert!(
            !overlay_forms::is_opaque(&root, OverlayXattrs::User).unwrap(),
            "{form}"
        );
    }
}

/// One-ID namespace: what cannot be done there fails clearly by default, or is skipped on
/// request.
#[test]
fn unmapped_owners_error_by_default_and_skip_on_request() {
    require_root!();
    let w = Work::new();
    let layer = write_layer(
        &w,
        &Tar::new()
            .entry(
                Header {
                    uid: 1000,
                    gid: 1000,
                    ..Header::new(b'0', "owned")
                },
                b"x",
            )
            .finish(),
    );
    let root = w.mkdir_owned("root", NOBODY);
    let apply = |flags: &str| apply_single_id(&layer, &root, flags);
    let o = apply("");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(
        err.contains("lchown") && err.contains("owned") && err.contains("uid 1000"),
        "{err}"
    );
    ok(&apply("--ignore-chown-errors"));
    let md = fs::metadata(root.join("owned")).unwrap();
    assert_eq!((md.uid(), md.gid(), md.len()), (NOBODY, NOBODY, 1));
}

#[test]
fn device_nodes_skipped_as_containerd_or_refused_clearly() {
    require_root!();
    let w = Work::new();
    let mut null = Header::new(b'3', "null");
    (null.devmajor, null.devminor) = (1, 3);
    let layer = write_layer(
        &w,
        &Tar::new()
            .entry(null, b"")
            .file("after", b"after\n")
            .finish(),
    );
    let root = w.mkdir_owned("root", NOBODY);
    let apply = |flags: &str| apply_single_id(&layer, &root, flags);
    for flags in ["", "--devices skip"] {
        let _ = fs::remove_file(root.join("after"));
        ok(&apply(flags));
        assert!(root.join("after").exists(), "{flags}");
        assert!(fs::symlink_metadata(root.join("null")).is_err(), "{flags}");
    }
    let o = apply("--devices create");
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.contains("mknod") && err.contains("null") && err.contains("CAP_MKNOD"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn trusted_and_overlay_xattrs_refused_rootless_user_xattrs_kept() {
    require_root!();
    let w = Work::new();
    let with_xattr = |key: &str| Tar::new().pax(&[(key, b"v")]).file("f", b"f\n").finish();
    let root = w.mkdir_owned("root", NOBODY);
    let apply =
        |bytes: &[u8]| apply_single_id(&write_layer(&w, bytes), &root, "--whiteouts overlay");
    ok(&apply(&with_xattr("SCHILY.xattr.user.kept")));
    assert_eq!(
        xattr::get(root.join("f"), "user.kept").unwrap(),
        Some(b"v".to_vec())
    );

    let o = apply(&with_xattr("SCHILY.xattr.trusted.secret"));
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.contains("trusted.secret") && err.contains("/f"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}
