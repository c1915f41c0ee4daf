//! The all-xattrs compare (issue 12 part 3) and what apply does with each namespace: user. and
//! security. restored, trusted. refused (as containerd), overlay's own metadata never carried
//! and never set, in either whiteout mode. Setting trusted.* and security.* needs root.

mod common;

use std::fs;
use std::path::Path;

use common::require_root;
use common::tree::set_times_tree;
use layerdiff::{apply, compare, ApplyOptions, CompareOptions, Compression, WhiteoutMode};

const CAP: &[u8] = &[
    1, 0, 0, 2, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

fn diff(lower: &Path, upper: &Path, all_xattrs: bool) -> Vec<u8> {
    let opts = CompareOptions {
        compression: Compression::None,
        all_xattrs,
        ..Default::default()
    };
    let mut out = Vec::new();
    compare(lower, upper, &mut out, &opts).unwrap();
    out
}

/// An entry's name and its PAX records (key, value) in the order they were written.
type PaxOfEntry = (String, Vec<(String, Vec<u8>)>);

/// Every entry's [`PaxOfEntry`].
fn pax_of(layer: &[u8]) -> Vec<PaxOfEntry> {
    let mut ar = tar::Archive::new(layer);
    let mut out = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let mut recs = Vec::new();
        if let Ok(Some(exts)) = e.pax_extensions() {
            for ext in exts {
                let ext = ext.unwrap();
                recs.push((ext.key().unwrap().to_string(), ext.value_bytes().to_vec()));
            }
        }
        out.push((String::from_utf8_lossy(&e.path_bytes()).into_owned(), recs));
    }
    out
}

fn set(p: &Path, name: &str, value: &[u8]) {
    xattr::set(p, name, value).unwrap_or_else(|e| panic!("set {name} on {}: {e}", p.display()));
}

/// lower empty; upper: `f` with xattrs of every namespace (overlay's included), `d/` with one.
fn trees(t: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (lower, upper) = (t.join("lower"), t.join("upper"));
    fs::create_dir(&lower).unwrap();
    fs::create_dir_all(upper.join("d")).unwrap();
    let f = upper.join("f");
    fs::write(&f, b"data").unwrap();
    set(&f, "user.b", b"2");
    set(&f, "user.a", b"");
    set(&f, "security.test", b"ima-like\0bytes");
    set(&f, "security.capability", CAP);
    set(&f, "trusted.t", b"admin");
    set(&f, "trusted.overlay.opaque", b"y");
    set(&f, "user.overlay.redirect", b"/elsewhere");
    set(&upper.join("d"), "user.dir", b"on a dir");
    set_times_tree(&upper, 1_600_000_000, 0);
    (lower, upper)
}

fn xattr_names(layer_pax: &[PaxOfEntry], entry: &str) -> Vec<String> {
    layer_pax
        .iter()
        .find(|(n, _)| n == entry)
        .unwrap_or_else(|| panic!("{entry} not in the layer"))
        .1
        .iter()
        .filter_map(|(k, _)| k.strip_prefix("SCHILY.xattr.").map(str::to_string))
        .collect()
}

#[test]
fn all_xattrs_are_carried_sorted_but_overlays_and_default_is_unchanged() {
    require_root!();
    let t = tempfile::tempdir().unwrap();
    let (lower, upper) = trees(t.path());

    let default = pax_of(&diff(&lower, &upper, false));
    assert_eq!(xattr_names(&default, "f"), ["security.capability"]);
    assert_eq!(xattr_names(&default, "d/"), Vec::<String>::new());

    let all = pax_of(&diff(&lower, &upper, true));
    // Go's writer sorts the PAX keys bytewise.
    assert_eq!(
        xattr_names(&all, "f"),
        [
            "security.capability",
            "security.test",
            "trusted.t",
            "user.a",
            "user.b"
        ]
    );
    assert_eq!(xattr_names(&all, "d/"), ["user.dir"]);
    let f = &all.iter().find(|(n, _)| n == "f").unwrap().1;
    let value = |k: &str| &f.iter().find(|(key, _)| key == k).unwrap().1;
    assert_eq!(value("SCHILY.xattr.security.test"), b"ima-like\0bytes");
    assert_eq!(value("SCHILY.xattr.user.a"), b"");
    assert_eq!(value("SCHILY.xattr.security.capability"), CAP);
}

/// `layer` applied into a fresh root in each whiteout mode.
fn apply_in_each_mode(layer: &[u8]) -> Vec<(WhiteoutMode, tempfile::TempDir)> {
    [WhiteoutMode::Remove, WhiteoutMode::Overlay]
        .into_iter()
        .map(|mode| {
            let root = tempfile::tempdir().unwrap();
            let opts = ApplyOptions {
                whiteouts: mode,
                ..Default::default()
            };
            apply(root.path(), layer, &opts).unwrap();
            (mode, root)
        })
        .collect()
}

#[test]
fn apply_restores_user_and_security_refuses_trusted_and_overlay_metadata() {
    require_root!();
    let t = tempfile::tempdir().unwrap();
    let (lower, upper) = trees(t.path());
    let layer = diff(&lower, &upper, true);
    for (mode, root) in apply_in_each_mode(&layer) {
        let root = root.path();
        let f = root.join("f");
        let get = |name: &str| xattr::get(&f, name).unwrap();
        assert_eq!(get("user.a").as_deref(), Some(&b""[..]), "{mode:?}");
        assert_eq!(get("user.b").as_deref(), Some(&b"2"[..]), "{mode:?}");
        assert_eq!(
            get("security.test").as_deref(),
            Some(&b"ima-like\0bytes"[..])
        );
        assert_eq!(get("security.capability").as_deref(), Some(CAP));
        assert_eq!(get("trusted.t"), None, "{mode:?}: trusted.* is refused");
        assert_eq!(
            xattr::get(root.join("d"), "user.dir").unwrap().as_deref(),
            Some(&b"on a dir"[..])
        );
        // Diffing the applied tree carries the same xattrs back (trusted.t aside).
        let back = pax_of(&diff(&lower, root, true));
        assert_eq!(
            xattr_names(&back, "f"),
            ["security.capability", "security.test", "user.a", "user.b"]
        );
    }
}

#[test]
fn a_layer_cannot_inject_overlay_metadata_in_either_whiteout_mode() {
    require_root!();
    let records: &[(&str, &[u8])] = &[
        ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
        ("SCHILY.xattr.user.overlay.opaque", b"y"),
        ("SCHILY.xattr.user.overlay.redirect", b"/etc"),
        ("SCHILY.xattr.user.overlay.whiteout", b""),
        ("SCHILY.xattr.user.kept", b"1"),
    ];
    let layer = common::tar::Tar::new()
        .pax(records)
        .dir("d")
        .pax(records)
        .file("d/f", b"x")
        .finish();
    for (mode, root) in apply_in_each_mode(&layer) {
        let root = root.path();
        for p in [root.join("d"), root.join("d/f")] {
            let names: Vec<String> = xattr::list(&p)
                .unwrap()
                .map(|n| n.to_string_lossy().into_owned())
                .collect();
            assert_eq!(names, ["user.kept"], "{mode:?} {}", p.display());
        }
    }
}
