//! Aufs whiteout mode (containerd 1.x's `AufsConvertWhiteout`): whiteout entries are written
//! as the files they are, into a plain directory standing for the rw branch, with the ro
//! branches as parents; and the whiteout escapes of containerd's TestBreakouts in that mode.
//! go/parity checks the same against containerd 1.7 itself.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::breakouts::{self, Breakout, INVALID_WHITEOUTS};
use common::require_root;
use common::sandbox::{apply_bytes, default_opts, same_file, Sandbox};
use common::tar::{Header, Tar};
use layerdiff::{ApplyOptions, ErrorKind, WhiteoutMode};

fn aufs_opts(parents: &[&Path]) -> ApplyOptions {
    ApplyOptions {
        whiteouts: WhiteoutMode::Aufs,
        parents: parents.iter().map(|p| p.to_path_buf()).collect(),
        ..default_opts()
    }
}

fn run(sb: &Sandbox, layer: Vec<u8>) -> layerdiff::Result<layerdiff::Applied> {
    let r = apply_bytes(&sb.root(), &layer, &aufs_opts(&[]));
    sb.assert_outside_untouched();
    r
}

/// Every path below `root`, sorted, as `path kind [content]` (`f` file, `d` directory, `l`
/// symlink with its target).
fn listing(root: &Path) -> Vec<String> {
    fn walk(dir: &Path, rel: &str, out: &mut Vec<String>) {
        for name in common::tree::list_names(dir) {
            let name = String::from_utf8(name).unwrap();
            let p = dir.join(&name);
            let rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let md = fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                out.push(format!("{rel} d"));
                walk(&p, &rel, out);
            } else if md.file_type().is_symlink() {
                out.push(format!("{rel} l {}", fs::read_link(&p).unwrap().display()));
            } else {
                let data = String::from_utf8(fs::read(&p).unwrap()).unwrap();
                out.push(format!("{rel} f {data}").trim_end().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(root, "", &mut out);
    out
}

#[test]
fn branch_holds_the_whiteout_files_and_keeps_what_was_there() {
    require_root!();
    let sb = Sandbox::new();
    fs::write(sb.p("gone"), "before").unwrap();
    fs::create_dir(sb.p("o")).unwrap();
    fs::write(sb.p("o/old"), "before").unwrap();
    let wh = Header {
        mode: 0o444,
        uid: 3,
        gid: 4,
        ..Header::new(b'0', ".wh.gone")
    };
    let layer = Tar::new()
        .entry(wh, b"")
        .file("o/.wh..wh..opq", b"")
        .file("o/new", b"new")
        .file("o/.wh.old", b"")
        // aufs' own hardlinked whiteouts, and data in a whiteout: kept as they come.
        .link("o/.wh.old", "o/.wh.other")
        .file("d/.wh.withdata", b"data")
        .dir("d/.wh.dir")
        .file("d/.wh.dir/inner", b"inner")
        .finish();
    run(&sb, layer).unwrap();
    assert_eq!(
        listing(&sb.root()),
        [
            ".wh.gone f",
            "d d",
            "d/.wh.dir d",
            "d/.wh.dir/inner f inner",
            "d/.wh.withdata f data",
            "gone f before",
            "o d",
            "o/.wh..wh..opq f",
            "o/.wh.old f",
            "o/.wh.other f",
            "o/new f new",
            "o/old f before",
        ]
    );
    let m = fs::symlink_metadata(sb.p(".wh.gone")).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o444, 3, 4));
    assert!(same_file(&sb.p("o/.wh.old"), &sb.p("o/.wh.other")));
}

#[test]
fn missing_parents_take_the_ro_branches_attributes() {
    require_root!();
    let sb = Sandbox::new();
    let (top, bottom) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    fs::create_dir_all(bottom.path().join("a/b")).unwrap();
    fs::set_permissions(bottom.path().join("a/b"), fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::lchown(bottom.path().join("a/b"), Some(13), Some(14)).unwrap();
    fs::create_dir(top.path().join("a")).unwrap();
    fs::set_permissions(top.path().join("a"), fs::Permissions::from_mode(0o711)).unwrap();
    std::os::unix::fs::lchown(top.path().join("a"), Some(21), Some(22)).unwrap();
    apply_bytes(
        &sb.root(),
        &Tar::new()
            .file("a/b/c/file", b"x")
            .file("a/b/.wh..wh..opq", b"")
            .finish(),
        &aufs_opts(&[top.path(), bottom.path()]),
    )
    .unwrap();
    let m = |p: &str| fs::symlink_metadata(sb.p(p)).unwrap();
    assert_eq!((m("a").mode() & 0o7777, m("a").uid()), (0o711, 21));
    assert_eq!((m("a/b").mode() & 0o7777, m("a/b").uid()), (0o750, 13));
    assert_eq!(m("a/b/c").mode() & 0o7777, 0o755);
    assert!(m("a/b/.wh..wh..opq").is_file());
    // The ro branches are only read.
    assert_eq!(listing(bottom.path()), ["a d", "a/b d"]);
    assert_eq!(listing(top.path()), ["a d"]);
}

/// containerd's `validateWhiteout` holds in aufs mode too: a name leaving its directory.
#[test]
fn whiteouts_leaving_their_directory_are_refused() {
    require_root!();
    for name in INVALID_WHITEOUTS.iter().chain(&[".wh.", "etc/.wh."]) {
        let sb = Sandbox::new();
        sb.etc_tree();
        let err = run(&sb, Tar::new().file(name, b"").finish()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArchive, "{name}: {err}");
        assert!(
            err.to_string().contains("invalid whiteout name"),
            "{name}: {err}"
        );
        assert_eq!(
            listing(&sb.root()),
            ["etc d", "etc/passwd f inside"],
            "{name}"
        );
    }
}

/// Apply the case in aufs mode: the root must then hold exactly `want`.
fn breakout(case: Breakout, want: &[&str]) {
    run(&case.sb, case.layer).unwrap();
    assert_eq!(listing(&case.sb.root()), want);
}

#[test]
fn whiteout_symlink() {
    require_root!();
    breakout(
        breakouts::whiteout_symlink(),
        &[
            ".wh.localetc f",
            "etc d",
            "etc/passwd f inside",
            "localetc l /etc",
        ],
    );
}

#[test]
fn whiteout_symlink_path() {
    require_root!();
    // The symlink resolves inside the root: the marker lands in the root's etc.
    breakout(
        breakouts::whiteout_symlink_path(),
        &[
            "etc d",
            "etc/.wh.whitedout f",
            "etc/passwd f inside",
            "etc/whitedout f w",
            "localetc l /etc",
        ],
    );
}

#[test]
fn whiteout_directory_name() {
    require_root!();
    breakout(
        breakouts::whiteout_directory_name(),
        &[
            ".wh.etc d",
            ".wh.etc/somefile f non-empty",
            "etc d",
            "etc/passwd f inside",
            "localetc l /etc",
        ],
    );
}

#[test]
fn whiteout_dead_symlink_parent() {
    require_root!();
    // The dead symlink resolves to /dne inside the root, made as a parent.
    breakout(
        breakouts::whiteout_dead_symlink_parent(),
        &[
            "dne d",
            "dne/.wh.etc f",
            "etc d",
            "etc/passwd f inside",
            "localetc l /dne",
        ],
    );
}

#[test]
fn whiteout_relative_path() {
    require_root!();
    breakout(
        breakouts::whiteout_relative_path(),
        &[
            ".wh.etc f",
            "etc d",
            "etc/passwd f inside",
            "localetc l /dne",
        ],
    );
}

#[test]
fn whiteout_opaque() {
    require_root!();
    breakout(
        breakouts::whiteout_opaque(),
        &[
            "etc d",
            "etc/.wh..wh..opq f",
            "etc/group f all groups",
            "etc/passwd f inside",
            "etc/shadow f s",
        ],
    );
}

#[test]
fn whiteout_opaque_out_of_order() {
    require_root!();
    breakout(
        breakouts::whiteout_opaque_out_of_order(),
        &[
            "etc d",
            "etc/.wh..wh..opq f",
            "etc/group f all groups",
            "etc/passwd f inside",
        ],
    );
}

/// A whiteout written through a symlink that points outside the root lands inside it.
#[test]
fn whiteout_through_an_escaping_symlink_stays_inside() {
    require_root!();
    let sb = Sandbox::new();
    std::os::unix::fs::symlink("../..", sb.p("up")).unwrap();
    std::os::unix::fs::symlink(sb.dir.path(), sb.p("abs")).unwrap();
    run(
        &sb,
        Tar::new()
            .file("up/.wh.outside-sentinel", b"")
            .file("abs/.wh.outside-sentinel", b"")
            .file("up/root/.wh.x", b"")
            .finish(),
    )
    .unwrap();
    let mut got = listing(&sb.root());
    got.retain(|l| !l.starts_with("abs l ") && !l.starts_with("up l "));
    let abs = sb
        .dir
        .path()
        .strip_prefix("/")
        .unwrap()
        .display()
        .to_string();
    let mut want = vec![
        ".wh.outside-sentinel f".to_string(),
        "root d".into(),
        "root/.wh.x f".into(),
    ];
    // `abs` resolves to the sandbox's own path re-rooted under the root.
    let mut prefix = String::new();
    for comp in abs.split('/') {
        prefix = if prefix.is_empty() {
            comp.to_string()
        } else {
            format!("{prefix}/{comp}")
        };
        want.push(format!("{prefix} d"));
    }
    want.push(format!("{prefix}/.wh.outside-sentinel f"));
    want.sort();
    got.sort();
    assert_eq!(got, want);
}
