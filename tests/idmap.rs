//! ID-mapped compare and apply (issue 12 part 1): a container's upper written with shifted
//! owners diffs, through the map, to the layer of the unshifted tree; a layer applied through a
//! map and diffed back through it is the same layer. All need root (chown).

mod common;

use std::fs;
use std::os::unix::fs::{lchown, symlink, MetadataExt, PermissionsExt};
use std::path::Path;

use common::require_root;
use common::tree::{mknod, set_times_tree};
use layerdiff::{
    apply, compare, ApplyOptions, CompareOptions, Compression, IdMap, IdMaps, IdRange, UnmappedId,
    WhiteoutMode,
};
use rustix::fs::FileType;

const T0: i64 = 1_600_000_000;

fn range(container: u32, host: u32, size: u32) -> IdRange {
    IdRange {
        container,
        host,
        size,
    }
}

/// Host IDs above 2097151 (the largest an 8-byte octal field holds), so the shifted tree's
/// own headers would need PAX uid/gid records; container 2500000 keeps one in the mapped ones.
fn maps() -> IdMaps {
    IdMaps {
        uid: IdMap::new(
            "uid map",
            vec![range(0, 3_000_000, 65536), range(2_500_000, 4_000_000, 1)],
        )
        .unwrap(),
        gid: IdMap::new(
            "gid map",
            vec![range(0, 3_100_000, 65536), range(2_500_000, 4_100_000, 1)],
        )
        .unwrap(),
        unmapped: UnmappedId::Error,
    }
}

/// A container-like tree, every owner given in container IDs and put on disk through `shift`
/// (uid, gid) → (uid, gid).
fn build(root: &Path, shift: &dyn Fn(u32, u32) -> (u32, u32)) {
    let own = |rel: &str, uid: u32, gid: u32| {
        let (u, g) = shift(uid, gid);
        lchown(root.join(rel), Some(u), Some(g)).unwrap();
    };
    let file = |rel: &str, data: &[u8], mode: u32| {
        let p = root.join(rel);
        fs::write(&p, data).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    };
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::create_dir_all(root.join("home/u")).unwrap();
    fs::create_dir_all(root.join("empty")).unwrap();
    file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n", 0o644);
    file("home/u/notes", b"mine", 0o600);
    file("big", b"large ids", 0o640);
    file("link1", b"hard", 0o644);
    fs::hard_link(root.join("link1"), root.join("home/link2")).unwrap();
    symlink("etc/passwd", root.join("sl")).unwrap();
    mknod(&root.join("pipe"), FileType::Fifo, 0o600, 0, 0);
    own("etc", 0, 0);
    own("etc/passwd", 0, 0);
    own("home", 0, 0);
    own("home/u", 1000, 1000);
    own("home/u/notes", 1000, 100);
    own("big", 2_500_000, 2_500_000);
    own("link1", 33, 33);
    own("sl", 5, 6);
    own("pipe", 7, 7);
    own("empty", 65535, 65535);
    set_times_tree(root, T0, 0);
}

fn diff(lower: &Path, upper: &Path, id_maps: IdMaps) -> layerdiff::Result<Vec<u8>> {
    let opts = CompareOptions {
        compression: Compression::None,
        id_maps,
        ..Default::default()
    };
    let mut out = Vec::new();
    compare(lower, upper, &mut out, &opts)?;
    Ok(out)
}

fn owners_in(layer: &[u8]) -> Vec<(String, u64, u64)> {
    let mut ar = tar::Archive::new(layer);
    ar.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            (name, h.uid().unwrap(), h.gid().unwrap())
        })
        .collect()
}

#[test]
fn shifted_upper_diffs_through_the_map_to_the_unshifted_layer() {
    require_root!();
    let t = tempfile::tempdir().unwrap();
    let (lower, plain, shifted_lower, shifted) = (
        t.path().join("lower"),
        t.path().join("plain"),
        t.path().join("shifted-lower"),
        t.path().join("shifted"),
    );
    let m = maps();
    let to_host = |u, g| (m.uid.to_host(u).unwrap(), m.gid.to_host(g).unwrap());
    for l in [&lower, &shifted_lower] {
        fs::create_dir_all(l.join("etc")).unwrap();
        fs::write(l.join("etc/gone"), b"deleted in the upper").unwrap();
    }
    lchown(shifted_lower.join("etc"), Some(3_000_000), Some(3_100_000)).unwrap();
    lchown(
        shifted_lower.join("etc/gone"),
        Some(3_000_000),
        Some(3_100_000),
    )
    .unwrap();
    set_times_tree(&lower, T0, 0);
    set_times_tree(&shifted_lower, T0, 0);
    fs::create_dir(&plain).unwrap();
    fs::create_dir(&shifted).unwrap();
    build(&plain, &|u, g| (u, g));
    build(&shifted, &to_host);

    let want = diff(&lower, &plain, IdMaps::default()).unwrap();
    let got = diff(&shifted_lower, &shifted, maps()).unwrap();
    let unmapped = diff(&shifted_lower, &shifted, IdMaps::default()).unwrap();
    assert_ne!(
        unmapped, want,
        "the shifted tree must differ without the map"
    );
    assert!(
        owners_in(&unmapped).iter().any(|(_, u, _)| *u == 3_001_000),
        "the unmapped layer carries host IDs"
    );
    assert_eq!(owners_in(&got), owners_in(&want));
    assert!(got == want, "mapped layer differs from the unshifted one");
    let names: Vec<String> = owners_in(&want).into_iter().map(|e| e.0).collect();
    for must in ["etc/.wh.gone", "home/link2", "big", "sl", "pipe", "empty/"] {
        assert!(
            names.iter().any(|n| n == must),
            "{must} missing from {names:?}"
        );
    }
}

#[test]
fn an_owner_outside_the_map_is_an_error_unless_substituted() {
    require_root!();
    let t = tempfile::tempdir().unwrap();
    let (lower, upper) = (t.path().join("lower"), t.path().join("upper"));
    fs::create_dir(&lower).unwrap();
    fs::create_dir(&upper).unwrap();
    fs::write(upper.join("stray"), b"x").unwrap();
    lchown(upper.join("stray"), Some(5), Some(3_100_000)).unwrap();
    let e = diff(&lower, &upper, maps()).unwrap_err().to_string();
    assert!(e.contains("uid 5 of ") && e.contains("stray"), "{e}");
    let mut sub = maps();
    sub.unmapped = UnmappedId::Substitute(65534);
    let layer = diff(&lower, &upper, sub.clone()).unwrap();
    assert_eq!(owners_in(&layer), vec![("stray".into(), 65534, 0)]);

    // Apply: the layer's gid 0 maps; uid 70000 has no host ID.
    let mut hdr = tar::Header::new_ustar();
    hdr.set_path("far").unwrap();
    hdr.set_size(0);
    hdr.set_mode(0o644);
    hdr.set_uid(70000);
    hdr.set_gid(0);
    hdr.set_cksum();
    let mut b = tar::Builder::new(Vec::new());
    b.append(&hdr, &[][..]).unwrap();
    let layer = b.into_inner().unwrap();
    let root = t.path().join("root");
    fs::create_dir(&root).unwrap();
    let opts = ApplyOptions {
        id_maps: maps(),
        ..Default::default()
    };
    let e = apply(&root, &layer[..], &opts).unwrap_err().to_string();
    assert!(e.contains("uid 70000 of ") && e.contains("far"), "{e}");
    let opts = ApplyOptions {
        id_maps: sub,
        ..Default::default()
    };
    apply(&root, &layer[..], &opts).unwrap();
    let st = fs::symlink_metadata(root.join("far")).unwrap();
    assert_eq!((st.uid(), st.gid()), (65534, 3_100_000));
}

#[test]
fn apply_through_the_map_then_diff_through_it_gives_the_layer_back() {
    require_root!();
    let t = tempfile::tempdir().unwrap();
    let (empty, plain, root) = (
        t.path().join("empty"),
        t.path().join("plain"),
        t.path().join("root"),
    );
    for d in [&empty, &plain, &root] {
        fs::create_dir(d).unwrap();
    }
    build(&plain, &|u, g| (u, g));
    let layer = diff(&empty, &plain, IdMaps::default()).unwrap();
    let opts = ApplyOptions {
        id_maps: maps(),
        ..Default::default()
    };
    apply(&root, &layer[..], &opts).unwrap();
    let st = fs::symlink_metadata(root.join("home/u/notes")).unwrap();
    assert_eq!(
        (st.uid(), st.gid()),
        (3_001_000, 3_100_100),
        "owner on disk is the host ID"
    );
    let st = fs::symlink_metadata(root.join("big")).unwrap();
    assert_eq!((st.uid(), st.gid()), (4_000_000, 4_100_000));
    assert!(
        diff(&empty, &root, maps()).unwrap() == layer,
        "round trip changed the layer"
    );

    // An overlay whiteout is owned through the map too (its header says 0:0).
    let mut b = tar::Builder::new(Vec::new());
    let mut hdr = tar::Header::new_ustar();
    hdr.set_path(".wh.gone").unwrap();
    hdr.set_size(0);
    hdr.set_mode(0o644);
    hdr.set_cksum();
    b.append(&hdr, &[][..]).unwrap();
    let wh = b.into_inner().unwrap();
    let opts = ApplyOptions {
        id_maps: maps(),
        whiteouts: WhiteoutMode::Overlay,
        ..Default::default()
    };
    apply(&root, &wh[..], &opts).unwrap();
    let st = fs::symlink_metadata(root.join("gone")).unwrap();
    assert_eq!((st.uid(), st.gid(), st.rdev()), (3_000_000, 3_100_000, 0));
}
