//! ID-mapped compare and apply (issue 12 part 1): a container's upper written with shifted
//! owners diffs, through the map, to the layer of the unshifted tree; a layer applied through a
//! map and diffed back through it is the same layer. All need root (chown).

mod common;

use std::fs;
use std::os::unix::fs::{lchown, symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

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

/// Under `dir`: an empty tree, [`build`] unshifted, and [`build`] shifted to host IDs by
/// [`maps`].
fn plain_and_shifted(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (empty, plain, shifted) = (dir.join("empty"), dir.join("plain"), dir.join("shifted"));
    for d in [&empty, &plain, &shifted] {
        fs::create_dir(d).unwrap();
    }
    build(&plain, &|u, g| (u, g));
    let m = maps();
    build(&shifted, &|u, g| {
        (m.uid.to_host(u).unwrap(), m.gid.to_host(g).unwrap())
    });
    (empty, plain, shifted)
}

/// The error message of a C ABI call (freed here), or `None` on success.
fn c_error(err: *mut layerdiff::capi::layerdiff_error) -> Option<String> {
    if err.is_null() {
        return None;
    }
    // SAFETY: a non-NULL error just returned by layerdiff, freed once here.
    unsafe {
        let m = std::ffi::CStr::from_ptr(layerdiff::capi::layerdiff_error_message(err))
            .to_string_lossy()
            .into_owned();
        layerdiff::capi::layerdiff_error_free(err);
        Some(m)
    }
}

#[test]
fn c_abi_takes_the_maps_and_rejects_bad_ones() {
    use layerdiff::capi::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    require_root!();
    let t = tempfile::tempdir().unwrap();
    let (empty, plain, shifted) = plain_and_shifted(t.path());
    let m = maps();
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let to_c = |map: &IdMap| -> Vec<layerdiff_idmap> {
        map.ranges()
            .iter()
            .map(|r| layerdiff_idmap {
                container_id: r.container,
                host_id: r.host,
                size: r.size,
            })
            .collect()
    };
    let (uids, gids) = (to_c(&m.uid), to_c(&m.gid));
    let run = |upper: &Path, o: &layerdiff_compare_options| -> Result<Vec<u8>, String> {
        let out = tempfile::tempfile().unwrap();
        // SAFETY: all-zero is a valid result struct; the strings and options outlive the call.
        let mut res: layerdiff_compare_result = unsafe { std::mem::zeroed() };
        let err = unsafe {
            layerdiff_compare(
                c(&empty).as_ptr(),
                c(upper).as_ptr(),
                out.as_raw_fd(),
                o,
                &mut res,
            )
        };
        match c_error(err) {
            Some(msg) => Err(msg),
            None => Ok(fs::read(format!("/proc/self/fd/{}", out.as_raw_fd())).unwrap()),
        }
    };
    // SAFETY: all-zero is the documented default of the options struct.
    let zero: layerdiff_compare_options = unsafe { std::mem::zeroed() };
    let plain_opts = layerdiff_compare_options {
        compression: LAYERDIFF_COMPRESSION_NONE,
        ..zero
    };
    let mapped = layerdiff_compare_options {
        id_maps: layerdiff_id_maps {
            uidmap: uids.as_ptr(),
            uidmap_len: uids.len(),
            gidmap: gids.as_ptr(),
            gidmap_len: gids.len(),
            ..zero.id_maps
        },
        ..plain_opts
    };
    assert!(run(&shifted, &mapped).unwrap() == run(&plain, &plain_opts).unwrap());

    let overlapping = [
        layerdiff_idmap {
            container_id: 0,
            host_id: 10,
            size: 5,
        },
        layerdiff_idmap {
            container_id: 100,
            host_id: 12,
            size: 1,
        },
    ];
    let bad = [
        (
            layerdiff_compare_options {
                id_maps: layerdiff_id_maps {
                    uidmap_len: 1,
                    ..zero.id_maps
                },
                ..plain_opts
            },
            "id_maps.uidmap is NULL but id_maps.uidmap_len is 1",
        ),
        (
            layerdiff_compare_options {
                id_maps: layerdiff_id_maps {
                    gidmap: overlapping.as_ptr(),
                    gidmap_len: 2,
                    ..zero.id_maps
                },
                ..plain_opts
            },
            "overlap on the host side",
        ),
        (
            layerdiff_compare_options {
                id_maps: layerdiff_id_maps {
                    unmapped_id: 65534,
                    ..zero.id_maps
                },
                ..plain_opts
            },
            "unmapped_id is 65534 but unmapped is LAYERDIFF_UNMAPPED_ERROR",
        ),
        (
            layerdiff_compare_options {
                id_maps: layerdiff_id_maps {
                    unmapped: 9,
                    ..zero.id_maps
                },
                ..plain_opts
            },
            "unknown unmapped policy 9",
        ),
        (
            layerdiff_compare_options {
                xattrs: 3,
                ..plain_opts
            },
            "unknown xattrs choice 3",
        ),
        (
            layerdiff_compare_options {
                reserved_word: 1,
                ..plain_opts
            },
            "reserved_word[0] is 0x1",
        ),
    ];
    for (o, needle) in bad {
        let e = run(&plain, &o).unwrap_err();
        assert!(e.contains(needle), "{e:?} lacks {needle:?}");
    }
}

#[test]
fn cli_maps_ids_and_carries_xattrs() {
    require_root!();
    let t = tempfile::tempdir().unwrap();
    let (empty, plain, shifted) = plain_and_shifted(t.path());
    let root = t.path().join("root");
    fs::create_dir(&root).unwrap();
    xattr::set(plain.join("etc/passwd"), "user.note", b"kept").unwrap();
    xattr::set(shifted.join("etc/passwd"), "user.note", b"kept").unwrap();
    let idargs = [
        "--uidmap",
        "0:3000000:65536",
        "--uidmap",
        "2500000:4000000:1",
        "--gidmap",
        "0:3100000:65536",
        "--gidmap",
        "2500000:4100000:1",
    ];
    let cli = |args: &[&std::ffi::OsStr]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_layerdiff"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let os = |s: &'static str| std::ffi::OsStr::new(s);
    let layer = |name: &str| t.path().join(name);
    let diff_cli = |upper: &Path, out: &Path, extra: &[&str]| {
        let mut args = vec![
            os("diff"),
            os("--compression"),
            os("none"),
            os("--xattrs"),
            os("all"),
        ];
        args.extend(extra.iter().map(|s| std::ffi::OsStr::new(*s)));
        args.extend([
            empty.as_os_str(),
            upper.as_os_str(),
            os("-o"),
            out.as_os_str(),
        ]);
        cli(&args)
    };
    let (ok, err) = diff_cli(&plain, &layer("plain.tar"), &[]);
    assert!(ok, "{err}");
    let (ok, err) = diff_cli(&shifted, &layer("shifted.tar"), &idargs);
    assert!(ok, "{err}");
    let want = fs::read(layer("plain.tar")).unwrap();
    assert!(fs::read(layer("shifted.tar")).unwrap() == want);
    assert!(
        want.windows(21).any(|w| w == b"SCHILY.xattr.user.not"),
        "--xattrs all carried user.note"
    );

    let plain_tar = layer("plain.tar");
    let mut args = vec![os("apply")];
    args.extend(idargs.iter().map(std::ffi::OsStr::new));
    args.extend([plain_tar.as_os_str(), root.as_os_str()]);
    let (ok, err) = cli(&args);
    assert!(ok, "{err}");
    assert_eq!(
        fs::symlink_metadata(root.join("big")).unwrap().uid(),
        4_000_000
    );
    let (ok, err) = diff_cli(&root, &layer("back.tar"), &idargs);
    assert!(ok, "{err}");
    assert!(
        fs::read(layer("back.tar")).unwrap() == want,
        "CLI round trip changed the layer"
    );

    // The policy flag: an unmapped owner fails, or becomes --unmapped-id.
    fs::write(shifted.join("stray"), b"x").unwrap();
    lchown(shifted.join("stray"), Some(5), Some(5)).unwrap();
    let (ok, err) = diff_cli(&shifted, &layer("stray.tar"), &idargs);
    assert!(
        !ok && err.contains("uid 5 of ") && err.lines().count() == 1,
        "{err}"
    );
    let with_policy = [&idargs[..], &["--unmapped-id", "65534"]].concat();
    let (ok, err) = diff_cli(&shifted, &layer("stray.tar"), &with_policy);
    assert!(ok, "{err}");
    let owners = owners_in(&fs::read(layer("stray.tar")).unwrap());
    assert!(
        owners.contains(&("stray".into(), 65534, 65534)),
        "{owners:?}"
    );

    for (bad, needle) in [
        ("0:1", "\"0:1\": not three fields"),
        ("0:x:1", "host ID \"x\""),
    ] {
        let (ok, err) = cli(&[
            os("diff"),
            os("--uidmap"),
            std::ffi::OsStr::new(bad),
            empty.as_os_str(),
            plain.as_os_str(),
            os("-o"),
            os("-"),
        ]);
        assert!(!ok && err.contains(needle), "{bad}: {err}");
    }
    let (ok, err) = cli(&[
        os("diff"),
        os("--uidmap"),
        os("0:10:5"),
        os("--uidmap"),
        os("3:100:1"),
        empty.as_os_str(),
        plain.as_os_str(),
        os("-o"),
        os("-"),
    ]);
    assert!(
        !ok && err.contains("overlap on the container side") && err.lines().count() == 1,
        "{err}"
    );
}
