//! The 34 escape attempts of containerd's TestBreakouts, as our own tests: each layer must
//! apply (or fail) exactly as containerd does and never touch anything outside the root.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use common::breakouts::{self, Breakout, INVALID_WHITEOUTS};
use common::require_root;
use common::sandbox::{apply_bytes, default_opts, same_file, Sandbox};
use common::tar::Tar;
use layerdiff::ErrorKind;

fn run(sb: &Sandbox, layer: Vec<u8>) -> layerdiff::Result<layerdiff::Applied> {
    let r = apply_bytes(&sb.root(), &layer, &default_opts());
    sb.assert_outside_untouched();
    r
}

fn unbroken(sb: &Sandbox) {
    assert_eq!(fs::read(sb.p("etc/unbroken")).unwrap(), b"unbroken");
}

#[test]
fn symlink_absolute() {
    require_root!();
    let sb = Sandbox::new();
    run(
        &sb,
        Tar::new()
            .dir("etc")
            .symlink("/etc", "localetc")
            .file("/localetc/unbroken", b"unbroken")
            .finish(),
    )
    .unwrap();
    unbroken(&sb);
}

#[test]
fn symlink_up_and_out() {
    require_root!();
    let sb = Sandbox::new();
    run(
        &sb,
        Tar::new()
            .dir("etc")
            .dir("dummy")
            .symlink("/dummy/../etc", "localetc")
            .file("/localetc/unbroken", b"unbroken")
            .finish(),
    )
    .unwrap();
    unbroken(&sb);
}

#[test]
fn symlink_multiple_absolute() {
    require_root!();
    let sb = Sandbox::new();
    run(
        &sb,
        Tar::new()
            .dir("etc")
            .dir("dummy")
            .symlink("/etc", "/dummy/etc")
            .symlink("/dummy/etc", "localetc")
            .file("/dummy/etc/unbroken", b"unbroken")
            .finish(),
    )
    .unwrap();
    unbroken(&sb);
}

#[test]
fn symlink_multiple_relative() {
    require_root!();
    let sb = Sandbox::new();
    run(
        &sb,
        Tar::new()
            .dir("etc")
            .dir("dummy")
            .symlink("/etc", "/dummy/etc")
            .symlink("./dummy/etc", "localetc")
            .file("/dummy/etc/unbroken", b"unbroken")
            .finish(),
    )
    .unwrap();
    unbroken(&sb);
}

#[test]
fn symlink_empty_file() {
    require_root!();
    let sb = Sandbox::new();
    run(
        &sb,
        Tar::new()
            .dir("etc")
            .file("etc/emptied", b"notempty")
            .symlink("/etc", "localetc")
            .file("/localetc/emptied", b"")
            .finish(),
    )
    .unwrap();
    assert_eq!(fs::read(sb.p("etc/emptied")).unwrap(), b"");
}

fn passwd_tar() -> Tar {
    Tar::new().dir("etc").file("/etc/passwd", b"inside")
}

#[test]
fn hardlink_relative() {
    require_root!();
    let sb = Sandbox::new();
    run(
        &sb,
        passwd_tar()
            .dir("breakouts")
            .symlink("../../etc", "breakouts/d1")
            .link("/breakouts/d1/passwd", "breakouts/mypasswd")
            .finish(),
    )
    .unwrap();
    assert!(same_file(&sb.p("breakouts/mypasswd"), &sb.p("etc/passwd")));
}

#[test]
fn hardlink_down_and_out() {
    require_root!();
    let sb = Sandbox::new();
    run(
        &sb,
        passwd_tar()
            .dir("breakouts")
            .dir("downandout")
            .symlink("../downandout/../../etc", "breakouts/d1")
            .link("/breakouts/d1/passwd", "breakouts/mypasswd")
            .finish(),
    )
    .unwrap();
    assert!(same_file(&sb.p("breakouts/mypasswd"), &sb.p("etc/passwd")));
}

#[test]
fn hardlink_absolute() {
    require_root!();
    let sb = Sandbox::new();
    run(
        &sb,
        passwd_tar()
            .symlink("/etc", "localetc")
            .link("/localetc/passwd", "localpasswd")
            .finish(),
    )
    .unwrap();
    assert!(same_file(&sb.p("localpasswd"), &sb.p("etc/passwd")));
}

#[test]
fn hardlink_relative_long() {
    require_root!();
    let sb = Sandbox::new();
    run(
        &sb,
        passwd_tar()
            .symlink("../../../../../../../etc", "localetc")
            .link("/localetc/passwd", "localpasswd")
            .finish(),
    )
    .unwrap();
    assert!(same_file(&sb.p("localpasswd"), &sb.p("etc/passwd")));
}

#[test]
fn hardlink_relative_up_and_out() {
    require_root!();
    let sb = Sandbox::new();
    run(
        &sb,
        passwd_tar()
            .symlink("upandout/../../../etc", "localetc")
            .link("/localetc/passwd", "localpasswd")
            .finish(),
    )
    .unwrap();
    assert!(same_file(&sb.p("localpasswd"), &sb.p("etc/passwd")));
}

#[test]
fn hardlink_direct_relative() {
    require_root!();
    let sb = Sandbox::new();
    run(
        &sb,
        passwd_tar()
            .link("../../../../../etc/passwd", "localpasswd")
            .finish(),
    )
    .unwrap();
    assert!(same_file(&sb.p("localpasswd"), &sb.p("etc/passwd")));
}

#[test]
fn hardlink_direct_absolute() {
    require_root!();
    let sb = Sandbox::new();
    run(
        &sb,
        passwd_tar().link("/etc/passwd", "localpasswd").finish(),
    )
    .unwrap();
    assert!(same_file(&sb.p("localpasswd"), &sb.p("etc/passwd")));
}

#[test]
fn symlink_parent_directory() {
    require_root!();
    let sb = Sandbox::new();
    run(
        &sb,
        passwd_tar()
            .symlink("/etc/", "..")
            .link("/etc/passwd", "localpasswd")
            .finish(),
    )
    .unwrap();
    assert!(same_file(&sb.p("localpasswd"), &sb.p("etc/passwd")));
}

#[test]
fn symlink_empty_filename() {
    require_root!();
    let sb = Sandbox::new();
    run(
        &sb,
        passwd_tar()
            .symlink("/etc/", "")
            .link("/etc/passwd", "localpasswd")
            .finish(),
    )
    .unwrap();
    assert!(same_file(&sb.p("localpasswd"), &sb.p("etc/passwd")));
}

#[test]
fn symlink_parent_relative() {
    require_root!();
    let sb = Sandbox::new();
    run(
        &sb,
        passwd_tar()
            .symlink("/etc/", "localetc/sub/..")
            .link("/etc/passwd", "/localetc/localpasswd")
            .finish(),
    )
    .unwrap();
    // localetc -> /etc/ resolves inside the root.
    assert!(same_file(&sb.p("etc/localpasswd"), &sb.p("etc/passwd")));
}

#[test]
fn symlink_slash_ended() {
    require_root!();
    let sb = Sandbox::new();
    run(
        &sb,
        passwd_tar()
            .dir("localetc/")
            .link("/etc/passwd", "/localetc/localpasswd")
            .finish(),
    )
    .unwrap();
    assert!(same_file(
        &sb.p("localetc/localpasswd"),
        &sb.p("etc/passwd")
    ));
}

#[test]
fn symlink_override_directory() {
    require_root!();
    let sb = Sandbox::new();
    sb.etc_tree();
    fs::create_dir(sb.p("localetc")).unwrap();
    run(
        &sb,
        Tar::new()
            .symlink("/etc", "localetc")
            .link("/etc/passwd", "/localetc/localpasswd")
            .finish(),
    )
    .unwrap();
    assert!(same_file(&sb.p("etc/localpasswd"), &sb.p("etc/passwd")));
}

#[test]
fn symlink_override_directory_relative() {
    require_root!();
    let sb = Sandbox::new();
    sb.etc_tree();
    fs::create_dir(sb.p("localetc")).unwrap();
    run(
        &sb,
        Tar::new()
            .symlink("../../etc", "localetc")
            .link("/etc/passwd", "/localetc/localpasswd")
            .finish(),
    )
    .unwrap();
    assert!(same_file(&sb.p("etc/localpasswd"), &sb.p("etc/passwd")));
}

#[test]
fn directory_override_symlink() {
    require_root!();
    let sb = Sandbox::new();
    sb.etc_tree();
    std::os::unix::fs::symlink("/etc", sb.p("localetc")).unwrap();
    run(
        &sb,
        Tar::new()
            .dir("/localetc/")
            .link("/etc/passwd", "/localetc/localpasswd")
            .finish(),
    )
    .unwrap();
    assert!(fs::symlink_metadata(sb.p("localetc")).unwrap().is_dir());
    assert!(same_file(
        &sb.p("localetc/localpasswd"),
        &sb.p("etc/passwd")
    ));
}

#[test]
fn directory_override_symlink_and_hardlink() {
    require_root!();
    let sb = Sandbox::new();
    sb.etc_tree();
    std::os::unix::fs::symlink("etc", sb.p("localetc")).unwrap();
    fs::hard_link(sb.p("etc/passwd"), sb.p("etc/localpasswd")).unwrap();
    run(
        &sb,
        Tar::new()
            .dir("/localetc/")
            .file("/localetc/localpasswd", b"different")
            .finish(),
    )
    .unwrap();
    assert!(!same_file(
        &sb.p("localetc/localpasswd"),
        &sb.p("etc/passwd")
    ));
    assert_eq!(fs::read(sb.p("etc/passwd")).unwrap(), b"inside");
}

fn invalid_whiteout(name: &str) {
    let sb = Sandbox::new();
    sb.etc_tree();
    let err = run(&sb, Tar::new().file(name, b"").finish()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArchive, "{err}");
    assert!(err.to_string().contains("invalid whiteout name"), "{err}");
    assert_eq!(fs::read(sb.p("etc/passwd")).unwrap(), b"inside");
}

#[test]
fn whiteout_root_parent() {
    require_root!();
    invalid_whiteout(INVALID_WHITEOUTS[0]);
}

#[test]
fn whiteout_parent() {
    require_root!();
    invalid_whiteout(INVALID_WHITEOUTS[1]);
}

#[test]
fn whiteout_root() {
    require_root!();
    invalid_whiteout(INVALID_WHITEOUTS[2]);
}

#[test]
fn whiteout_current_directory() {
    require_root!();
    invalid_whiteout(INVALID_WHITEOUTS[3]);
}

#[test]
fn whiteout_symlink() {
    require_root!();
    let Breakout { sb, layer } = breakouts::whiteout_symlink();
    run(&sb, layer).unwrap();
    assert_eq!(fs::read(sb.p("etc/passwd")).unwrap(), b"inside");
    assert!(fs::symlink_metadata(sb.p("localetc")).is_err());
}

#[test]
fn whiteout_symlink_path() {
    require_root!();
    let Breakout { sb, layer } = breakouts::whiteout_symlink_path();
    run(&sb, layer).unwrap();
    assert_eq!(fs::read(sb.p("etc/passwd")).unwrap(), b"inside");
    assert!(fs::symlink_metadata(sb.p("etc/whitedout")).is_err());
}

#[test]
fn whiteout_directory_name() {
    require_root!();
    let Breakout { sb, layer } = breakouts::whiteout_directory_name();
    run(&sb, layer).unwrap();
    assert_eq!(fs::read(sb.p("etc/passwd")).unwrap(), b"inside");
    assert_eq!(fs::read(sb.p(".wh.etc/somefile")).unwrap(), b"non-empty");
}

#[test]
fn whiteout_dead_symlink_parent() {
    require_root!();
    let Breakout { sb, layer } = breakouts::whiteout_dead_symlink_parent();
    run(&sb, layer).unwrap();
    assert_eq!(fs::read(sb.p("etc/passwd")).unwrap(), b"inside");
}

#[test]
fn whiteout_relative_path() {
    require_root!();
    let Breakout { sb, layer } = breakouts::whiteout_relative_path();
    run(&sb, layer).unwrap();
    assert!(fs::symlink_metadata(sb.p("etc/passwd")).is_err());
}

#[test]
fn whiteout_opaque() {
    require_root!();
    let Breakout { sb, layer } = breakouts::whiteout_opaque();
    run(&sb, layer).unwrap();
    assert!(fs::symlink_metadata(sb.p("etc/passwd")).is_err());
    assert!(fs::symlink_metadata(sb.p("etc/shadow")).is_err());
    assert_eq!(fs::read(sb.p("etc/group")).unwrap(), b"all groups");
}

#[test]
fn whiteout_opaque_out_of_order() {
    require_root!();
    let Breakout { sb, layer } = breakouts::whiteout_opaque_out_of_order();
    run(&sb, layer).unwrap();
    assert!(fs::symlink_metadata(sb.p("etc/passwd")).is_err());
    assert_eq!(fs::read(sb.p("etc/group")).unwrap(), b"all groups");
}

#[test]
fn symlink_override_path() {
    require_root!();
    let sb = Sandbox::new();
    let name = format!("breakout-{}", std::process::id());
    let f = format!("foo/tmp/{name}");
    run(
        &sb,
        Tar::new()
            .dir("foo")
            .dir("foo/tmp")
            .file(&f, &[0, 1, 2])
            .symlink("/", "foo")
            .file(&f, &[3, 4, 5])
            .dir("foo")
            .dir("foo/tmp")
            .file(&f, &[6, 7, 8])
            .finish(),
    )
    .unwrap();
    if let Ok(b) = fs::read(format!("/tmp/{name}")) {
        assert_ne!(b, [3, 4, 5], "file written outside of root");
    }
    assert_eq!(fs::read(sb.p(&f)).unwrap(), [6, 7, 8]);
}

#[test]
fn hardlink_symlink_before_create_target() {
    require_root!();
    let sb = Sandbox::new();
    run(
        &sb,
        Tar::new()
            .dir("etc")
            .symlink("/etc/passwd", "localpasswd")
            .link("localpasswd", "localpasswd-dup")
            .file("/etc/passwd", b"after")
            .finish(),
    )
    .unwrap();
    // The hardlink is of the symlink, which now resolves (inside the root) to etc/passwd.
    assert!(fs::symlink_metadata(sb.p("localpasswd-dup"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(fs::read(sb.p("etc/passwd")).unwrap(), b"after");
}

#[test]
fn hardlink_symlink_relative() {
    require_root!();
    let sb = Sandbox::new();
    run(
        &sb,
        passwd_tar()
            .symlink("../../../../../etc/passwd", "passwdlink")
            .link("/passwdlink", "localpasswd")
            .finish(),
    )
    .unwrap();
    assert!(fs::symlink_metadata(sb.p("localpasswd"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        fs::read_link(sb.p("localpasswd")).unwrap(),
        fs::read_link(sb.p("passwdlink")).unwrap()
    );
}

#[test]
fn hardlink_symlink_absolute() {
    require_root!();
    let sb = Sandbox::new();
    run(
        &sb,
        passwd_tar()
            .symlink("/etc/passwd", "passwdlink")
            .link("/passwdlink", "localpasswd")
            .finish(),
    )
    .unwrap();
    assert!(fs::symlink_metadata(sb.p("localpasswd"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        fs::read_link(sb.p("localpasswd")).unwrap(),
        fs::read_link(sb.p("passwdlink")).unwrap()
    );
}

#[test]
fn hardlink_symlink_chmod() {
    require_root!();
    let sb = Sandbox::new();
    let outside = tempfile::tempdir().unwrap();
    let p = outside.path().join("perm400");
    fs::write(&p, "...").unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o400)).unwrap();
    let ep = outside.path().join("also-exists-outside-root");
    fs::write(&ep, "...").unwrap();
    run(
        &sb,
        Tar::new()
            .symlink(p.to_str().unwrap(), ep.to_str().unwrap())
            .link(ep.to_str().unwrap(), "sketchylink")
            .finish(),
    )
    .unwrap();
    assert_eq!(
        fs::symlink_metadata(&p).unwrap().permissions().mode() & 0o7777,
        0o400
    );
    assert_eq!(fs::read(&ep).unwrap(), b"...");
}
