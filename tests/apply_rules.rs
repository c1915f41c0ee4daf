//! containerd's apply rules, one test each (see docs/containerd.md §3).

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::sync::{Arc, Mutex};

use common::compress::{gzip, sha256_digest, zstd};
use common::require_root;
use common::sandbox::{apply_bytes, default_opts, same_file, Sandbox};
use common::tar::{Header, Tar};
use layerdiff::{ApplyOptions, CancelToken, ErrorKind, Progress, WhiteoutMode};

fn xattr(p: &std::path::Path, k: &str) -> Option<Vec<u8>> {
    let n = rustix::fs::lgetxattr_query(p, k).ok()?;
    let mut v = vec![0u8; n];
    let k2 = rustix::fs::lgetxattr(p, k, &mut v[..]).ok()?;
    v.truncate(k2);
    Some(v)
}

#[test]
fn entry_types_modes_owners_and_times() {
    require_root!();
    let sb = Sandbox::new();
    let mut suid = Header::new(b'0', "d/suid");
    suid.mode = 0o4755;
    suid.uid = 1234;
    suid.gid = 5678;
    let mut chr = Header::new(b'3', "d/chr");
    chr.devmajor = 1;
    chr.devminor = 5;
    let mut blk = Header::new(b'4', "d/blk");
    blk.devmajor = 8;
    blk.devminor = 1;
    let mut dir = Header::new(b'5', "d/");
    dir.mode = 0o1777;
    dir.mtime = 1_500_000_000;
    let layer = Tar::new()
        .entry(dir, b"")
        .pax(&[
            ("mtime", b"1600000000.123456789"),
            ("atime", b"1700000000.5"),
        ])
        .file("d/nanos", b"n")
        .entry(suid, b"x")
        .entry(chr, b"")
        .entry(blk, b"")
        .entry(Header::new(b'6', "d/fifo"), b"")
        .symlink("nanos", "d/sl")
        .file("d/t", b"t")
        .link("d/t", "d/hl")
        .finish();
    apply_bytes(&sb.root(), &layer, &default_opts()).unwrap();
    let m = |p: &str| fs::symlink_metadata(sb.p(p)).unwrap();
    assert_eq!(m("d").mode() & 0o7777, 0o1777);
    assert_eq!(
        m("d").mtime(),
        1_500_000_000,
        "directory times are set again at the end"
    );
    assert_eq!(
        (m("d/nanos").mtime(), m("d/nanos").mtime_nsec()),
        (1_600_000_000, 123_456_789)
    );
    assert_eq!(
        (m("d/nanos").atime(), m("d/nanos").atime_nsec()),
        (1_700_000_000, 500_000_000)
    );
    assert_eq!(
        m("d/suid").mode() & 0o7777,
        0o4755,
        "chmod after lchown keeps setuid"
    );
    assert_eq!((m("d/suid").uid(), m("d/suid").gid()), (1234, 5678));
    assert!(m("d/chr").file_type().is_char_device());
    assert_eq!(m("d/chr").rdev(), rustix::fs::makedev(1, 5));
    assert!(m("d/blk").file_type().is_block_device());
    assert!(m("d/fifo").file_type().is_fifo());
    assert_eq!(fs::read_link(sb.p("d/sl")).unwrap().to_str(), Some("nanos"));
    assert_eq!(m("d/hl").ino(), m("d/t").ino());
    sb.assert_outside_untouched();
}

#[test]
fn no_same_owner_keeps_our_ids() {
    require_root!();
    let sb = Sandbox::new();
    let mut f = Header::new(b'0', "f");
    f.uid = 777;
    apply_bytes(
        &sb.root(),
        &Tar::new().entry(f, b"x").finish(),
        &ApplyOptions {
            same_owner: false,
            ..default_opts()
        },
    )
    .unwrap();
    assert_eq!(fs::metadata(sb.p("f")).unwrap().uid(), 0);
}

#[test]
fn xattrs_with_containerd_skip_rules() {
    require_root!();
    let sb = Sandbox::new();
    let layer = Tar::new()
        .pax(&[
            ("SCHILY.xattr.user.a", b"1"),
            ("SCHILY.xattr.trusted.t", b"skip"),
            ("SCHILY.xattr.user.empty", b""),
        ])
        .file("f", b"x")
        .pax(&[("SCHILY.xattr.user.onlink", b"eperm is skipped")])
        .symlink("f", "l")
        .finish();
    apply_bytes(&sb.root(), &layer, &default_opts()).unwrap();
    assert_eq!(xattr(&sb.p("f"), "user.a").as_deref(), Some(&b"1"[..]));
    assert_eq!(xattr(&sb.p("f"), "user.empty").as_deref(), Some(&b""[..]));
    assert_eq!(xattr(&sb.p("f"), "trusted.t"), None);
}

#[test]
fn missing_parents_are_0755_or_copied_from_lowers() {
    require_root!();
    let sb = Sandbox::new();
    let lower = tempfile::tempdir().unwrap();
    fs::create_dir_all(lower.path().join("a/b")).unwrap();
    fs::set_permissions(lower.path().join("a"), fs::Permissions::from_mode(0o710)).unwrap();
    rustix::fs::chown(
        lower.path().join("a"),
        Some(rustix::fs::Uid::from_raw(42)),
        Some(rustix::fs::Gid::from_raw(43)),
    )
    .unwrap();
    rustix::fs::setxattr(
        lower.path().join("a"),
        "user.l",
        b"v",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    rustix::fs::setxattr(
        lower.path().join("a"),
        "trusted.l",
        b"v",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    fs::write(lower.path().join("x"), "file stops the search").unwrap();
    let opts = ApplyOptions {
        whiteouts: WhiteoutMode::Overlay,
        parents: vec![lower.path().to_path_buf()],
        ..default_opts()
    };
    apply_bytes(
        &sb.root(),
        &Tar::new()
            .file("a/b/c/f", b"1")
            .file("x/f", b"2")
            .file("new/f", b"3")
            .finish(),
        &opts,
    )
    .unwrap();
    let m = |p: &str| fs::symlink_metadata(sb.p(p)).unwrap();
    assert_eq!(m("a").mode() & 0o7777, 0o710);
    assert_eq!((m("a").uid(), m("a").gid()), (42, 43));
    assert_eq!(xattr(&sb.p("a"), "user.l").as_deref(), Some(&b"v"[..]));
    assert_eq!(xattr(&sb.p("a"), "trusted.l"), None);
    assert_eq!(m("a/b/c").mode() & 0o7777, 0o755);
    assert_eq!(m("x").mode() & 0o7777, 0o755);
    assert_eq!(m("new").mode() & 0o7777, 0o755);
}

#[test]
fn overlay_whiteouts() {
    require_root!();
    let sb = Sandbox::new();
    let mut wh = Header::new(b'0', "d/.wh.gone");
    wh.uid = 11;
    wh.gid = 12;
    let layer = Tar::new()
        .dir("d")
        .entry(wh, b"")
        .file("d/.wh..wh..opq", b"")
        .finish();
    apply_bytes(
        &sb.root(),
        &layer,
        &ApplyOptions {
            whiteouts: WhiteoutMode::Overlay,
            ..default_opts()
        },
    )
    .unwrap();
    let m = fs::symlink_metadata(sb.p("d/gone")).unwrap();
    assert!(m.file_type().is_char_device());
    assert_eq!((m.rdev(), m.uid(), m.gid()), (0, 11, 12));
    assert_eq!(
        xattr(&sb.p("d"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert!(fs::symlink_metadata(sb.p("d/.wh..wh..opq")).is_err());
    // A whiteout over something existing is an error in overlay mode.
    let err = apply_bytes(
        &sb.root(),
        &Tar::new().file("d/.wh.gone", b"").finish(),
        &ApplyOptions {
            whiteouts: WhiteoutMode::Overlay,
            ..default_opts()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("whiteout"), "{err}");
}

#[test]
fn remove_mode_whiteouts_through_symlinked_directories() {
    require_root!();
    let sb = Sandbox::new();
    fs::create_dir_all(sb.p("real/sub")).unwrap();
    fs::write(sb.p("real/a"), "a").unwrap();
    fs::write(sb.p("real/sub/b"), "b").unwrap();
    std::os::unix::fs::symlink("/real", sb.p("abs")).unwrap();
    std::os::unix::fs::symlink("../../../real/sub", sb.p("rel")).unwrap();
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("keep"), "k").unwrap();
    std::os::unix::fs::symlink(outside.path(), sb.p("host")).unwrap();
    let layer = Tar::new()
        .file("abs/.wh.a", b"")
        .file("rel/.wh..wh..opq", b"")
        .file("host/.wh.keep", b"")
        .file("host/.wh..wh..opq", b"")
        .finish();
    apply_bytes(&sb.root(), &layer, &default_opts()).unwrap();
    assert!(fs::symlink_metadata(sb.p("real/a")).is_err());
    assert!(fs::symlink_metadata(sb.p("real/sub/b")).is_err());
    assert!(fs::symlink_metadata(sb.p("real/sub")).unwrap().is_dir());
    assert_eq!(
        fs::read(outside.path().join("keep")).unwrap(),
        b"k",
        "whiteout escaped the root"
    );
    sb.assert_outside_untouched();
}

#[test]
fn hardlink_targets_outside_resolve_inside() {
    require_root!();
    let sb = Sandbox::new();
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("secret"), "s").unwrap();
    std::os::unix::fs::symlink(outside.path(), sb.p("host")).unwrap();
    let target = "host/secret";
    let err = apply_bytes(
        &sb.root(),
        &Tar::new().link(target, "h").finish(),
        &default_opts(),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert_eq!(
        fs::metadata(outside.path().join("secret")).unwrap().nlink(),
        1
    );
    let abs = format!("{}/secret", outside.path().display());
    assert!(apply_bytes(
        &sb.root(),
        &Tar::new().link(&abs, "h2").finish(),
        &default_opts()
    )
    .is_err());
    assert_eq!(
        fs::metadata(outside.path().join("secret")).unwrap().nlink(),
        1
    );
}

#[test]
fn file_over_symlink_to_outside_file_replaces_the_link() {
    require_root!();
    let sb = Sandbox::new();
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    fs::write(&victim, "original").unwrap();
    std::os::unix::fs::symlink(&victim, sb.p("link")).unwrap();
    apply_bytes(
        &sb.root(),
        &Tar::new().file("link", b"mine").finish(),
        &default_opts(),
    )
    .unwrap();
    assert_eq!(fs::read(&victim).unwrap(), b"original");
    assert!(fs::symlink_metadata(sb.p("link")).unwrap().is_file());
}

#[test]
fn symlink_loops_are_errors() {
    require_root!();
    let sb = Sandbox::new();
    std::os::unix::fs::symlink("b", sb.p("a")).unwrap();
    std::os::unix::fs::symlink("a", sb.p("b")).unwrap();
    let err = apply_bytes(
        &sb.root(),
        &Tar::new().file("a/f", b"x").finish(),
        &default_opts(),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("resolve a/: too many links"),
        "{err}"
    );
    sb.assert_outside_untouched();
}

#[test]
fn pax_and_gnu_long_names_with_dotdot_stay_inside() {
    require_root!();
    let sb = Sandbox::new();
    let deep = format!("../../../{}{}pax-escape", "x/".repeat(60), "../".repeat(61));
    let layer = Tar::new()
        .pax(&[
            ("path", deep.as_bytes()),
            ("linkpath", b"../../../../etc/passwd"),
        ])
        .entry(Header::new(b'2', "placeholder"), b"")
        .gnu_long(
            b'L',
            format!("../../{}{}gnu-escape", "y/".repeat(70), "../".repeat(72)).as_bytes(),
        )
        .file("short", b"g")
        .gnu_long(b'K', b"../../../pax-escape")
        .link("ignored", "gnu-hard")
        .finish();
    apply_bytes(&sb.root(), &layer, &default_opts()).unwrap();
    assert_eq!(
        fs::read_link(sb.p("pax-escape")).unwrap().to_str(),
        Some("../../../../etc/passwd")
    );
    assert_eq!(fs::read(sb.p("gnu-escape")).unwrap(), b"g");
    assert!(fs::symlink_metadata(sb.p("gnu-hard"))
        .unwrap()
        .file_type()
        .is_symlink());
    sb.assert_outside_untouched();
}

#[test]
fn digest_size_trailing_bytes_and_compression() {
    require_root!();
    let tar = Tar::new().file("f", b"data").finish();
    let mut with_trailing = tar.clone();
    with_trailing.extend_from_slice(b"trailing");
    let gz = gzip(&with_trailing, 6);
    let zst = zstd(&with_trailing, 3);
    let want = sha256_digest(&with_trailing);
    for input in [&with_trailing, &gz, &zst] {
        let sb = Sandbox::new();
        let got = apply_bytes(&sb.root(), input, &default_opts()).unwrap();
        assert_eq!(got.digest, want);
        assert_eq!(got.size, with_trailing.len() as u64);
        assert_eq!(fs::read(sb.p("f")).unwrap(), b"data");
    }
}

#[test]
fn progress_reports_zero_first_and_total_last() {
    require_root!();
    let sb = Sandbox::new();
    let layer = Tar::new().file("f", &vec![7u8; 3 << 20]).finish();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let opts = ApplyOptions {
        progress: Some(Progress::new(move |n| s2.lock().unwrap().push(n))),
        ..default_opts()
    };
    apply_bytes(&sb.root(), &layer, &opts).unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.first(), Some(&0));
    assert_eq!(seen.last(), Some(&(layer.len() as u64)));
    assert!(seen.windows(2).all(|w| w[0] <= w[1]));
}

#[test]
fn cancel_stops_promptly() {
    require_root!();
    let sb = Sandbox::new();
    let token = CancelToken::new();
    token.cancel();
    let opts = ApplyOptions {
        cancel: Some(token),
        ..default_opts()
    };
    let err = apply_bytes(&sb.root(), &Tar::new().file("f", b"x").finish(), &opts).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Canceled);

    // Cancelled from another thread while a large file is being copied.
    let token = CancelToken::new();
    let t2 = token.clone();
    let opts = ApplyOptions {
        cancel: Some(token),
        progress: Some(Progress::new(move |n| {
            if n > 64 << 20 {
                t2.cancel()
            }
        })),
        ..default_opts()
    };
    let big = Tar::new().file("big", &vec![1u8; 256 << 20]).finish();
    let err = apply_bytes(&sb.root(), &big, &opts).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Canceled, "{err}");
}

#[test]
fn fallback_walk_matches_openat2() {
    require_root!();
    let walk = ApplyOptions {
        resolver: layerdiff::Resolver::Walk,
        ..default_opts()
    };
    let sb = Sandbox::new();
    let layer = Tar::new()
        .dir("etc")
        .file("etc/passwd", b"inside")
        .symlink("../../../etc", "up")
        .symlink("/etc", "abs")
        .file("up/viaup", b"1")
        .file("abs/viaabs", b"2")
        .link("up/passwd", "hl")
        .file("abs/.wh.viaup", b"")
        .finish();
    apply_bytes(&sb.root(), &layer, &walk).unwrap();
    assert_eq!(fs::read(sb.p("etc/viaabs")).unwrap(), b"2");
    assert!(fs::symlink_metadata(sb.p("etc/viaup")).is_err());
    assert!(same_file(&sb.p("hl"), &sb.p("etc/passwd")));
    sb.assert_outside_untouched();
}

#[test]
fn sparse_files_expand_holes() {
    require_root!();
    let sb = Sandbox::new();
    // 0.1 map: data "abc" at 4, "de" at 10, logical size 16.
    let mut t = Tar::new()
        .pax(&[
            ("GNU.sparse.numblocks", b"2"),
            ("GNU.sparse.map", b"4,3,10,2"),
            ("GNU.sparse.size", b"16"),
            ("GNU.sparse.name", b"sp01"),
        ])
        .file("ignored-name", b"abcde");
    // 1.0 map in the data section.
    let mut data = b"2\n0\n2\n8\n1\n".to_vec();
    data.resize(512, 0);
    data.extend_from_slice(b"xyz");
    t = t
        .pax(&[
            ("GNU.sparse.major", b"1"),
            ("GNU.sparse.minor", b"0"),
            ("GNU.sparse.realsize", b"12"),
            ("GNU.sparse.name", b"sp10"),
        ])
        .file("x", &data);
    apply_bytes(&sb.root(), &t.finish(), &default_opts()).unwrap();
    assert_eq!(
        fs::read(sb.p("sp01")).unwrap(),
        b"\0\0\0\0abc\0\0\0de\0\0\0\0"
    );
    assert_eq!(fs::read(sb.p("sp10")).unwrap(), b"xy\0\0\0\0\0\0z\0\0\0");
}

#[test]
fn concurrent_symlink_swaps_never_redirect_writes_outside() {
    require_root!();
    let sb = Sandbox::new();
    let outside = tempfile::tempdir().unwrap();
    fs::create_dir(sb.p("d")).unwrap();
    std::os::unix::fs::symlink(outside.path(), sb.p("d-link")).unwrap();
    let mut t = Tar::new();
    for i in 0..3000 {
        t = t.file(&format!("d/f{i}"), b"payload");
        if i % 100 == 0 {
            t = t.file(&format!("d/sub{i}/g"), b"payload");
        }
    }
    let layer = t.finish();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swaps_so_far = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let swapper = {
        let stop = stop.clone();
        let swaps_so_far = swaps_so_far.clone();
        let root = sb.root();
        std::thread::spawn(move || {
            let dir = rustix::fs::open(
                &root,
                rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY,
                rustix::fs::Mode::empty(),
            )
            .unwrap();
            let mut swaps = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Atomically exchange the directory and the symlink to the outside.
                rustix::fs::renameat_with(
                    &dir,
                    "d",
                    &dir,
                    "d-link",
                    rustix::fs::RenameFlags::EXCHANGE,
                )
                .unwrap();
                swaps += 1;
                swaps_so_far.store(swaps, std::sync::atomic::Ordering::Relaxed);
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            swaps
        })
    };
    // Whether it fails (a symlink met where a directory was resolved) or succeeds does not
    // matter; writing outside would. An apply that fails at once may end before the swapper
    // has run much (a fast or busy machine), so it is applied again until the swaps have
    // overlapped the applies at least a few times.
    let mut res = apply_bytes(&sb.root(), &layer, &default_opts());
    let started = std::time::Instant::now();
    while swaps_so_far.load(std::sync::atomic::Ordering::Relaxed) <= 10
        && started.elapsed() < std::time::Duration::from_secs(10)
    {
        res = apply_bytes(&sb.root(), &layer, &default_opts());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    assert!(swaps > 10, "the race did not run ({swaps} swaps)");
    eprintln!(
        "{swaps} swaps during apply; apply result: {:?}",
        res.as_ref().map(|_| ())
    );
    let leaked: Vec<_> = fs::read_dir(outside.path()).unwrap().collect();
    assert!(
        leaked.is_empty(),
        "apply wrote outside the root: {leaked:?} (result {res:?})"
    );
    sb.assert_outside_untouched();
}

#[test]
fn zstd_with_a_leading_skippable_frame_and_sync_fs() {
    require_root!();
    let sb = Sandbox::new();
    let tar = Tar::new().file("f", b"skippable").finish();
    // A skippable frame (magic 0x184D2A5E, 4-byte length, payload) before the real frame.
    let mut layer = vec![0x5e, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, b'a', b'b', b'c'];
    layer.extend(zstd(&tar, 3));
    let opts = ApplyOptions {
        sync_fs: true,
        ..default_opts()
    };
    let got = apply_bytes(&sb.root(), &layer, &opts).unwrap();
    assert_eq!(fs::read(sb.p("f")).unwrap(), b"skippable");
    assert_eq!(got.size, tar.len() as u64);
}

#[test]
fn fallback_walk_handles_loops_and_dotdot() {
    require_root!();
    let walk = ApplyOptions {
        resolver: layerdiff::Resolver::Walk,
        ..default_opts()
    };
    let sb = Sandbox::new();
    std::os::unix::fs::symlink("l2/x", sb.p("l1")).unwrap();
    std::os::unix::fs::symlink("l1/x", sb.p("l2")).unwrap();
    fs::create_dir_all(sb.p("a/b")).unwrap();
    std::os::unix::fs::symlink("../../../../..", sb.p("a/b/up")).unwrap();
    let looped = apply_bytes(&sb.root(), &Tar::new().file("l1/f", b"x").finish(), &walk);
    let up = apply_bytes(
        &sb.root(),
        &Tar::new().file("a/b/up/a/b/up/top", b"t").finish(),
        &walk,
    );
    assert!(looped.is_err());
    up.unwrap();
    assert_eq!(fs::read(sb.p("top")).unwrap(), b"t");
    sb.assert_outside_untouched();
}
