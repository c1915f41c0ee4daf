//! Rules of docs/containerd.md §1 (which changes) and §2 (the tar stream) checked on real trees.
//! Some need root (chown, mknod, security.capability): they skip loudly when not root.

mod common;

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{chown, symlink, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use common::compress::{gunzip_first_member, sha256_digest, unzstd};
use common::require_root;
use common::rng::Rng;
use common::tree::{mknod, set_times};
use layerdiff::{compare, CancelToken, CompareOptions, Compression, ErrorKind, Progress};
use rustix::fs::FileType;

/// One tar entry as read back with the `tar` crate.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    name: String,
    kind: u8,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    size: u64,
    link: Option<String>,
    devmajor: Option<u32>,
    devminor: Option<u32>,
    capability: Option<Vec<u8>>,
    data: Vec<u8>,
}

fn entries(tar_bytes: &[u8]) -> Vec<Entry> {
    let mut ar = tar::Archive::new(tar_bytes);
    let mut out = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let mut capability = None;
        if let Ok(Some(exts)) = e.pax_extensions() {
            for ext in exts {
                let ext = ext.unwrap();
                if ext.key_bytes() == b"SCHILY.xattr.security.capability" {
                    capability = Some(ext.value_bytes().to_vec());
                }
            }
        }
        let h = e.header().clone();
        let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let link = e
            .link_name_bytes()
            .map(|l| String::from_utf8_lossy(&l).into_owned());
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.push(Entry {
            name,
            kind: h.entry_type().as_byte(),
            mode: h.mode().unwrap(),
            uid: h.uid().unwrap(),
            gid: h.gid().unwrap(),
            mtime: h.mtime().unwrap(),
            size: h.size().unwrap(),
            link,
            devmajor: h.device_major().unwrap(),
            devminor: h.device_minor().unwrap(),
            capability,
            data,
        });
    }
    out
}

fn names(es: &[Entry]) -> Vec<&str> {
    es.iter().map(|e| e.name.as_str()).collect()
}

fn diff_with(lower: &Path, upper: &Path, opts: &CompareOptions) -> (Vec<u8>, layerdiff::Diff) {
    let mut out = Vec::new();
    let d = compare(lower, upper, &mut out, opts).unwrap();
    (out, d)
}

fn diff(lower: &Path, upper: &Path) -> Vec<u8> {
    let opts = CompareOptions {
        compression: Compression::None,
        ..Default::default()
    };
    diff_with(lower, upper, &opts).0
}

fn trees() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let lower = t.path().join("lower");
    let upper = t.path().join("upper");
    fs::create_dir(&lower).unwrap();
    fs::create_dir(&upper).unwrap();
    (t, lower, upper)
}

fn write(p: &Path, data: &[u8], mode: u32) {
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(p, data).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

fn mkdir(p: &Path, mode: u32) {
    fs::create_dir_all(p).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// Write the same file into both trees with the same times.
fn both(lower: &Path, upper: &Path, rel: &str, data: &[u8], mode: u32, sec: i64, nsec: i64) {
    for root in [lower, upper] {
        let p = root.join(rel);
        write(&p, data, mode);
        set_times(&p, sec, nsec);
    }
}

const T0: i64 = 1_600_000_000;

#[test]
fn empty_diff_is_two_zero_blocks() {
    let (_t, lower, upper) = trees();
    both(&lower, &upper, "same", b"x", 0o644, T0, 5);
    let opts = CompareOptions {
        compression: Compression::None,
        ..Default::default()
    };
    let (out, d) = diff_with(&lower, &upper, &opts);
    assert_eq!(out, vec![0u8; 1024]);
    assert_eq!(
        d.diff_id,
        "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"
    );
    assert_eq!(d.digest, d.diff_id);
    assert_eq!((d.size, d.uncompressed_size), (1024, 1024));
    assert_eq!(d.media_type, layerdiff::MEDIA_TYPE_TAR);
}

#[test]
fn walk_order_sorts_slash_before_other_bytes() {
    let (_t, lower, upper) = trees();
    for n in ["a-b", "a.b", "a/z", "a/b/c", "a0", "A", "\u{e9}"] {
        write(&upper.join(n), b"x", 0o644);
    }
    let es = entries(&diff(&lower, &upper));
    assert_eq!(
        names(&es),
        ["A", "a/", "a/b/", "a/b/c", "a/z", "a-b", "a.b", "a0", "\u{e9}"],
        "pre-order, bytewise, with a directory's children before its longer siblings"
    );
}

#[test]
fn file_fields_mode_owner_mtime_and_data() {
    require_root!();
    let (_t, lower, upper) = trees();
    let p = upper.join("f");
    write(&p, b"hello", 0o644);
    chown(&p, Some(1234), Some(5678)).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o4755)).unwrap(); // chown clears setuid
    set_times(&p, T0, 999_999_999);
    let es = entries(&diff(&lower, &upper));
    assert_eq!(es.len(), 1);
    let e = &es[0];
    assert_eq!((e.kind, e.mode, e.uid, e.gid), (b'0', 0o4755, 1234, 5678));
    assert_eq!(e.mtime, T0 as u64, "mtime floored to seconds");
    assert_eq!((e.size, e.data.as_slice()), (5, &b"hello"[..]));
    assert_eq!((e.devmajor, e.devminor), (Some(0), Some(0)));
}

#[test]
fn unchanged_entries_are_dropped_and_directory_times_ignored() {
    let (_t, lower, upper) = trees();
    mkdir(&lower.join("d"), 0o755);
    mkdir(&upper.join("d"), 0o755);
    set_times(&lower.join("d"), T0, 0);
    set_times(&upper.join("d"), T0 + 100, 7);
    both(&lower, &upper, "d/same", b"same", 0o644, T0, 0);
    assert_eq!(diff(&lower, &upper), vec![0u8; 1024]);
}

#[test]
fn same_file_rules_for_times_and_contents() {
    let (_t, lower, upper) = trees();
    // Both nanoseconds 0, same size: contents decide.
    both(&lower, &upper, "content-differs", b"aaaa", 0o644, T0, 0);
    write(&upper.join("content-differs"), b"bbbb", 0o644);
    set_times(&upper.join("content-differs"), T0, 0);
    both(&lower, &upper, "content-same", b"aaaa", 0o644, T0, 0);
    // Equal non-zero nanoseconds: same without reading contents.
    both(&lower, &upper, "nanos-equal", b"aaaa", 0o644, T0, 42);
    write(&upper.join("nanos-equal"), b"cccc", 0o644);
    set_times(&upper.join("nanos-equal"), T0, 42);
    // Nanoseconds differ (one is 0): changed even with the same contents.
    both(&lower, &upper, "nanos-differ", b"aaaa", 0o644, T0, 0);
    set_times(&upper.join("nanos-differ"), T0, 1);
    // Seconds differ.
    both(&lower, &upper, "secs-differ", b"aaaa", 0o644, T0, 0);
    set_times(&upper.join("secs-differ"), T0 + 1, 0);
    // Size differs.
    both(&lower, &upper, "size-differs", b"aaaa", 0o644, T0, 5);
    write(&upper.join("size-differs"), b"aaaaa", 0o644);
    set_times(&upper.join("size-differs"), T0, 5);
    // Empty files with whole-second times are the same.
    both(&lower, &upper, "empty", b"", 0o644, T0, 0);
    // Mode differs.
    both(&lower, &upper, "mode-differs", b"aaaa", 0o644, T0, 5);
    fs::set_permissions(
        upper.join("mode-differs"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    set_times(&upper.join("mode-differs"), T0, 5);
    // Symlinks with whole-second times: compared by target.
    for root in [&lower, &upper] {
        symlink(
            if root == &lower { "tgt1" } else { "tgt2" },
            root.join("sym-differs"),
        )
        .unwrap();
        set_times(&root.join("sym-differs"), T0, 0);
        symlink("same", root.join("sym-same")).unwrap();
        set_times(&root.join("sym-same"), T0, 0);
    }
    let es = entries(&diff(&lower, &upper));
    assert_eq!(
        names(&es),
        [
            "content-differs",
            "mode-differs",
            "nanos-differ",
            "secs-differ",
            "size-differs",
            "sym-differs"
        ]
    );
    assert_eq!(es[5].link.as_deref(), Some("tgt2"));
}

#[test]
fn owner_rdev_and_capability_changes_are_modifications() {
    require_root!();
    let (_t, lower, upper) = trees();
    both(&lower, &upper, "uid", b"u", 0o644, T0, 5);
    chown(upper.join("uid"), Some(7), None).unwrap();
    both(&lower, &upper, "gid", b"g", 0o644, T0, 5);
    chown(upper.join("gid"), None, Some(7)).unwrap();
    both(&lower, &upper, "cap", b"c", 0o755, T0, 5);
    let cap = [
        0u8, 0, 0, 2, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    xattr::set(upper.join("cap"), "security.capability", &cap).unwrap();
    for (root, minor) in [(&lower, 3), (&upper, 4)] {
        mknod(
            &root.join("dev"),
            FileType::CharacterDevice,
            0o600,
            1,
            minor,
        );
        set_times(&root.join("dev"), T0, 0);
    }
    // A directory's capability change is a change too.
    mkdir(&lower.join("dir"), 0o755);
    mkdir(&upper.join("dir"), 0o755);
    xattr::set(upper.join("dir"), "security.capability", &cap).unwrap();
    for p in ["uid", "gid", "cap"] {
        set_times(&upper.join(p), T0, 5);
    }
    let es = entries(&diff(&lower, &upper));
    assert_eq!(names(&es), ["cap", "dev", "dir/", "gid", "uid"]);
    assert_eq!(es[0].capability.as_deref(), Some(&cap[..]));
    assert_eq!(
        (es[1].kind, es[1].devmajor, es[1].devminor),
        (b'3', Some(1), Some(4))
    );
    assert_eq!(es[2].capability.as_deref(), Some(&cap[..]));
}

#[test]
fn deletions_whiteouts_and_implied_nested_deletes() {
    let (_t, lower, upper) = trees();
    write(&lower.join("d1/d2/f1"), b"x", 0o644);
    write(&lower.join("d1/f0"), b"x", 0o644);
    write(&lower.join("d1-after"), b"x", 0o644);
    write(&lower.join("keep/gone"), b"x", 0o644);
    write(&lower.join("keep/gone2"), b"x", 0o644);
    mkdir(&upper.join("keep"), 0o755);
    fs::set_permissions(lower.join("keep"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::set_permissions(upper.join("keep"), fs::Permissions::from_mode(0o700)).unwrap();
    // A directory that becomes a file: its children's deletes are implied.
    write(&lower.join("was-dir/child"), b"x", 0o644);
    write(&upper.join("was-dir"), b"now a file", 0o644);
    let out = diff(&lower, &upper);
    let es = entries(&out);
    assert_eq!(
        names(&es),
        [
            ".wh.d1",
            ".wh.d1-after",
            "keep/",
            "keep/.wh.gone",
            "keep/.wh.gone2",
            "was-dir"
        ]
    );
    for w in es.iter().filter(|e| e.name.contains(".wh.")) {
        assert_eq!(
            (w.kind, w.mode, w.uid, w.gid, w.mtime, w.size),
            (b'0', 0, 0, 0, 0, 0)
        );
    }
    assert_eq!(es[2].mode, 0o700, "parent of a whiteout comes from upper");
}

#[test]
fn sockets_are_skipped_but_deleted_sockets_whited_out() {
    let (_t, lower, upper) = trees();
    let _l1 = std::os::unix::net::UnixListener::bind(lower.join("old.sock")).unwrap();
    let _u1 = std::os::unix::net::UnixListener::bind(upper.join("new.sock")).unwrap();
    let _l2 = std::os::unix::net::UnixListener::bind(lower.join("mod.sock")).unwrap();
    let _u2 = std::os::unix::net::UnixListener::bind(upper.join("mod.sock")).unwrap();
    fs::set_permissions(upper.join("mod.sock"), fs::Permissions::from_mode(0o700)).unwrap();
    write(&upper.join("sub/new.sock.dir-marker"), b"", 0o644);
    let _u3 = std::os::unix::net::UnixListener::bind(upper.join("sub/s")).unwrap();
    let es = entries(&diff(&lower, &upper));
    assert_eq!(
        names(&es),
        [".wh.old.sock", "sub/", "sub/new.sock.dir-marker"]
    );
}

#[test]
fn fifos_devices_and_symlinks() {
    require_root!();
    let (_t, lower, upper) = trees();
    mknod(&upper.join("fifo"), FileType::Fifo, 0o640, 0, 0);
    mknod(
        &upper.join("blk"),
        FileType::BlockDevice,
        0o600,
        259,
        0xfffff,
    );
    mknod(
        &upper.join("chr"),
        FileType::CharacterDevice,
        0o666,
        4095,
        1,
    );
    symlink("../t\u{fc}r", upper.join("link")).unwrap();
    mkdir(&upper.join("dir"), 0o1777);
    let es = entries(&diff(&lower, &upper));
    assert_eq!(names(&es), ["blk", "chr", "dir/", "fifo", "link"]);
    assert_eq!(
        (es[0].kind, es[0].devmajor, es[0].devminor),
        (b'4', Some(259), Some(0xfffff))
    );
    assert_eq!(
        (es[1].kind, es[1].devmajor, es[1].devminor),
        (b'3', Some(4095), Some(1))
    );
    assert_eq!(
        (es[2].kind, es[2].mode, es[2].devmajor),
        (b'5', 0o1777, Some(0))
    );
    assert_eq!((es[3].kind, es[3].mode, es[3].size), (b'6', 0o640, 0));
    assert_eq!(
        (es[4].kind, es[4].link.as_deref(), es[4].size),
        (b'2', Some("../t\u{fc}r"), 0)
    );
}

#[test]
fn parents_come_first_and_once() {
    let (_t, lower, upper) = trees();
    mkdir(&lower.join("a/b/c"), 0o755);
    mkdir(&upper.join("a/b/c"), 0o751);
    fs::set_permissions(upper.join("a"), fs::Permissions::from_mode(0o711)).unwrap();
    fs::set_permissions(lower.join("a"), fs::Permissions::from_mode(0o711)).unwrap();
    write(&upper.join("a/b/c/new1"), b"1", 0o644);
    write(&upper.join("a/b/c/new2"), b"2", 0o644);
    let es = entries(&diff(&lower, &upper));
    assert_eq!(
        names(&es),
        ["a/", "a/b/", "a/b/c/", "a/b/c/new1", "a/b/c/new2"]
    );
    assert_eq!(
        es[0].mode, 0o711,
        "unchanged parent written from upper's stat"
    );
    assert_eq!(es[2].mode, 0o751);
}

#[test]
fn hardlinks_first_changed_name_is_source_and_unmodified_names_are_deferred() {
    let (_t, lower, upper) = trees();
    // lower: a/f (one name). upper: same a/f gains names 0-first (before) and z/last (after).
    for root in [&lower, &upper] {
        write(&root.join("a/f"), b"shared", 0o640);
        set_times(&root.join("a/f"), T0, 0);
        mkdir(&root.join("m"), 0o755);
    }
    fs::hard_link(upper.join("a/f"), upper.join("m/new")).unwrap();
    fs::hard_link(upper.join("a/f"), upper.join("z-last")).unwrap();
    let es = entries(&diff(&lower, &upper));
    // a/f is unchanged but linked: deferred until m/new (the first added name) carries the
    // data, then written as a link with its parent.
    assert_eq!(names(&es), ["m/", "m/new", "a/", "a/f", "z-last"]);
    assert_eq!((es[1].kind, es[1].data.as_slice()), (b'0', &b"shared"[..]));
    assert_eq!(
        (es[3].kind, es[3].link.as_deref(), es[3].size),
        (b'1', Some("m/new"), 0)
    );
    assert_eq!(
        (es[3].mode, es[3].mtime),
        (0o640, T0 as u64),
        "deferred link reuses the source header"
    );
    assert_eq!((es[4].kind, es[4].link.as_deref()), (b'1', Some("m/new")));
}

#[test]
fn source_date_epoch_clamps_later_mtimes_but_not_whiteouts() {
    let (_t, lower, upper) = trees();
    write(&lower.join("gone"), b"x", 0o644);
    for (n, sec, nsec) in [
        ("before", T0 - 10, 0),
        ("at", T0, 0),
        ("just-after", T0, 1),
        ("after", T0 + 10, 0),
    ] {
        write(&upper.join(n), b"x", 0o644);
        set_times(&upper.join(n), sec, nsec);
    }
    let opts = CompareOptions {
        compression: Compression::None,
        source_date_epoch: Some(T0 - 5),
        ..Default::default()
    };
    let es = entries(&diff_with(&lower, &upper, &opts).0);
    let mt: Vec<(&str, u64)> = es.iter().map(|e| (e.name.as_str(), e.mtime)).collect();
    let e = (T0 - 5) as u64;
    assert_eq!(
        mt,
        [
            ("after", e),
            ("at", e),
            ("before", (T0 - 10) as u64),
            (".wh.gone", 0),
            ("just-after", e)
        ]
    );
    let opts = CompareOptions {
        source_date_epoch: Some(T0),
        ..opts
    };
    let es = entries(&diff_with(&lower, &upper, &opts).0);
    assert_eq!(es[1].mtime, T0 as u64);
    assert_eq!(
        es[4].mtime, T0 as u64,
        "T0 + 1ns is after the epoch, clamped to it"
    );
}

#[test]
fn long_and_non_ascii_names_round_trip_through_a_tar_reader() {
    let (_t, lower, upper) = trees();
    let long_dir = "p".repeat(150);
    let names_in = [
        format!("{long_dir}/{}", "n".repeat(100)),
        "x".repeat(101),
        "caf\u{e9}".to_string(),
        format!("{}/{}", "q".repeat(156), "r".repeat(10)),
    ];
    for n in &names_in {
        write(&upper.join(n), b"x", 0o644);
    }
    symlink("l".repeat(150), upper.join("longlink")).unwrap();
    let es = entries(&diff(&lower, &upper));
    let got: Vec<&str> = names(&es);
    for n in &names_in {
        assert!(got.contains(&n.as_str()), "{n} missing from {got:?}");
    }
    let l = es.iter().find(|e| e.name == "longlink").unwrap();
    assert_eq!(l.link.as_deref(), Some("l".repeat(150).as_str()));
}

#[test]
fn gzip_and_zstd_outputs_decode_to_the_same_tar() {
    let (_t, lower, upper) = trees();
    let mut rng = Rng::new(7);
    for i in 0..40 {
        let len = [0usize, 1, 511, 512, 513, 131_072, 300_000, 1_000_000][i % 8];
        // Random (incompressible) and repetitive files in turn.
        let data: Vec<u8> = if i % 2 == 0 {
            rng.bytes(len)
        } else {
            (0..len).map(|j| b"abcabcab"[j % 8]).collect()
        };
        write(&upper.join(format!("d{}/f{i}", i % 3)), &data, 0o644);
    }
    let plain = diff(&lower, &upper);
    for level in [0, 1, 6, 9] {
        let opts = CompareOptions {
            compression: Compression::Gzip { level },
            ..Default::default()
        };
        let (gz, d) = diff_with(&lower, &upper, &opts);
        // One gzip member: what the first member holds is the whole layer.
        assert_eq!(gunzip_first_member(&gz), plain, "gzip level {level}");
        assert_eq!(d.media_type, layerdiff::MEDIA_TYPE_TAR_GZIP);
        assert_eq!(d.size, gz.len() as u64);
        assert_eq!(d.digest, sha256_digest(&gz));
        assert_eq!(d.diff_id, sha256_digest(&plain));
        assert_eq!(d.uncompressed_size, plain.len() as u64);
    }
    for level in [1, 3, 19] {
        let opts = CompareOptions {
            compression: Compression::Zstd { level },
            ..Default::default()
        };
        let (zs, d) = diff_with(&lower, &upper, &opts);
        assert_eq!(unzstd(&zs), plain, "zstd level {level}");
        assert_eq!(d.media_type, layerdiff::MEDIA_TYPE_TAR_ZSTD);
        assert_eq!(d.digest, sha256_digest(&zs));
    }
}

#[test]
fn progress_reports_uncompressed_bytes_up_to_the_total() {
    let (_t, lower, upper) = trees();
    write(&upper.join("big"), &vec![7u8; 3 << 20], 0o644);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = Arc::clone(&seen);
    let opts = CompareOptions {
        progress: Some(Progress::new(move |n| s2.lock().unwrap().push(n))),
        ..Default::default()
    };
    let (_, d) = diff_with(&lower, &upper, &opts);
    let seen = seen.lock().unwrap();
    assert!(seen.len() > 10, "reported while copying: {seen:?}");
    assert!(seen.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(*seen.last().unwrap(), d.uncompressed_size);
}

#[test]
fn cancel_before_and_during_the_walk() {
    let (_t, lower, upper) = trees();
    write(&upper.join("big"), &vec![1u8; 8 << 20], 0o644);
    let cancel = CancelToken::new();
    cancel.cancel();
    let opts = CompareOptions {
        cancel: Some(cancel),
        ..Default::default()
    };
    let err = compare(&lower, &upper, Vec::new(), &opts).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Canceled);

    // Cancelled from the progress callback, i.e. in the middle of copying one file.
    let cancel = CancelToken::new();
    let c2 = cancel.clone();
    let calls = Arc::new(AtomicU64::new(0));
    let calls2 = Arc::clone(&calls);
    let opts = CompareOptions {
        cancel: Some(cancel),
        progress: Some(Progress::new(move |_| {
            calls2.fetch_add(1, Ordering::Relaxed);
            c2.cancel();
        })),
        ..Default::default()
    };
    let err = compare(&lower, &upper, Vec::new(), &opts).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Canceled);
    assert!(
        calls.load(Ordering::Relaxed) < 5,
        "stopped promptly inside the file copy"
    );
}

#[test]
fn file_changing_size_while_read_is_an_error_naming_it() {
    let (_t, lower, upper) = trees();
    let big = upper.join("growing");
    write(&big, &vec![1u8; 4 << 20], 0o644);
    for (what, grow) in [("grows", true), ("shrinks", false)] {
        let p = big.clone();
        let done = Arc::new(AtomicU64::new(0));
        let opts = CompareOptions {
            compression: Compression::None,
            progress: Some(Progress::new(move |_| {
                if done.fetch_add(1, Ordering::Relaxed) == 0 {
                    let f = fs::OpenOptions::new().write(true).open(&p).unwrap();
                    f.set_len(if grow { 8 << 20 } else { 1 << 20 }).unwrap();
                }
            })),
            ..Default::default()
        };
        let err = compare(&lower, &upper, Vec::new(), &opts).unwrap_err();
        let msg = err.chain_message();
        assert!(
            msg.contains("growing") && msg.contains("changed size while reading"),
            "{what}: {msg}"
        );
        write(&big, &vec![1u8; 4 << 20], 0o644);
    }
}

#[test]
fn missing_or_non_directory_trees_are_errors_naming_them() {
    let (t, lower, upper) = trees();
    let missing = t.path().join("nope");
    let err = compare(&missing, &upper, Vec::new(), &CompareOptions::default()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains("nope"), "{err}");
    let err = compare(&lower, &missing, Vec::new(), &CompareOptions::default()).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
    write(&t.path().join("file"), b"x", 0o644);
    let err = compare(
        &lower,
        &t.path().join("file"),
        Vec::new(),
        &CompareOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("not a directory"), "{err}");
    let err = compare(
        &lower,
        &upper,
        Vec::new(),
        &CompareOptions {
            compression: Compression::Gzip { level: 10 },
            ..Default::default()
        },
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
}

/// A writer that fails with `errno` after `budget` bytes.
struct FailingWriter {
    budget: usize,
    errno: i32,
}

impl Write for FailingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.budget == 0 {
            return Err(std::io::Error::from_raw_os_error(self.errno));
        }
        let n = buf.len().min(self.budget);
        self.budget -= n;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn output_failures_are_errors_not_panics_or_hangs() {
    let (_t, lower, upper) = trees();
    let mut rng = Rng::new(1);
    for i in 0..30 {
        // Incompressible, so that compressed output also exceeds the writers' budgets.
        let data = rng.bytes(200_000);
        write(&upper.join(format!("f{i}")), &data, 0o644);
    }
    for compression in [
        Compression::None,
        Compression::Gzip { level: 1 },
        Compression::Zstd { level: 1 },
    ] {
        for (errno, budget) in [(libc::EPIPE, 0), (libc::ENOSPC, 100_000), (libc::EIO, 3000)] {
            let opts = CompareOptions {
                compression,
                ..Default::default()
            };
            let err = compare(&lower, &upper, FailingWriter { budget, errno }, &opts).unwrap_err();
            assert_eq!(err.errno(), Some(errno), "{compression:?}: {err}");
            assert!(err.to_string().contains("write layer"), "{err}");
        }
    }
    // A real full disk.
    let full = fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let err = compare(&lower, &upper, full, &CompareOptions::default()).unwrap_err();
    assert_eq!(err.errno(), Some(libc::ENOSPC), "{err}");
}

#[test]
fn non_utf8_names_are_carried_as_bytes() {
    let (_t, lower, upper) = trees();
    let name = std::ffi::OsStr::from_bytes(b"bad\xff\xfe");
    write(&upper.join(name), b"x", 0o644);
    let out = diff(&lower, &upper);
    let mut ar = tar::Archive::new(&out[..]);
    let e = ar.entries().unwrap().next().unwrap().unwrap();
    assert_eq!(&*e.path_bytes(), b"bad\xff\xfe");
    // The main header's name field drops the non-ASCII bytes, as Go's writer does.
    assert_eq!(&out[1024..1028], b"bad\0");
}

#[test]
fn cli_writes_to_stdout_and_files() {
    let (t, lower, upper) = trees();
    write(&upper.join("f"), b"cli", 0o644);
    let bin = env!("CARGO_BIN_EXE_layerdiff");
    let to_stdout = std::process::Command::new(bin)
        .args(["diff", "--compression", "none"])
        .arg(&lower)
        .arg(&upper)
        .args(["-o", "-"])
        .output()
        .unwrap();
    assert!(
        to_stdout.status.success(),
        "{}",
        String::from_utf8_lossy(&to_stdout.stderr)
    );
    assert_eq!(to_stdout.stdout, diff(&lower, &upper));
    let out = t.path().join("layer.tgz");
    let to_file = std::process::Command::new(bin)
        .arg("diff")
        .arg(&lower)
        .arg(&upper)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert!(to_file.status.success());
    let desc: serde_json::Value = serde_json::from_slice(&to_file.stdout).unwrap();
    let written = fs::read(&out).unwrap();
    assert_eq!(desc["mediaType"], layerdiff::MEDIA_TYPE_TAR_GZIP);
    assert_eq!(desc["size"], written.len() as u64);
    assert_eq!(desc["digest"], sha256_digest(&written).as_str());
    let bad = std::process::Command::new(bin)
        .arg("diff")
        .arg(t.path().join("missing"))
        .arg(&upper)
        .args(["-o", "-"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("missing") && stderr.lines().count() == 1,
        "{stderr}"
    );
    let _ = File::open(&out).unwrap();
}

#[test]
fn compressed_output_is_reproducible() {
    // Many chunks, handed to the gzip workers in an order that depends on timing: the bytes
    // must not depend on which worker compressed which chunk (they once did).
    let (_t, lower, upper) = trees();
    let mut rng = Rng::new(2);
    for f in 0..12 {
        let mut data = Vec::with_capacity(400_000);
        while data.len() < 400_000 {
            let x = rng.next();
            let word = ["layer", "diff", "containerd", "tar", "gzip"][(x % 5) as usize];
            data.extend_from_slice(word.as_bytes());
            data.push(if x & 0x100 == 0 {
                b' '
            } else {
                (x >> 32) as u8
            });
        }
        write(&upper.join(format!("f{f}")), &data, 0o644);
    }
    for compression in [
        Compression::Gzip { level: 6 },
        Compression::Zstd { level: 3 },
    ] {
        let opts = CompareOptions {
            compression,
            ..Default::default()
        };
        let (first_bytes, first) = diff_with(&lower, &upper, &opts);
        for _ in 0..6 {
            let (bytes, again) = diff_with(&lower, &upper, &opts);
            assert_eq!(
                again, first,
                "{compression:?}: descriptors differ between runs"
            );
            assert!(
                bytes == first_bytes,
                "{compression:?}: bytes differ between runs"
            );
        }
    }
}

/// An empty lower is no lower, in the core and the CLI (containerd's `WriteDiff("", upper)`):
/// the layer is the one against an empty directory.
#[test]
fn empty_lower_is_no_lower() {
    let (_t, lower, upper) = trees();
    mkdir(&upper.join("d"), 0o755);
    write(&upper.join("d/f"), b"x", 0o644);
    let against_empty = diff(&lower, &upper);
    assert_eq!(diff(Path::new(""), &upper), against_empty, "core");
    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_layerdiff"))
        .args(["diff", "--compression", "none", ""])
        .arg(&upper)
        .args(["-o", "-"])
        .output()
        .unwrap();
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    assert_eq!(cli.stdout, against_empty, "CLI");
}
