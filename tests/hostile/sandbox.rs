//! The sandbox: `outside/` (sentinels) beside `root/` (a pre-populated tree full of traps:
//! symlinks out of the root, up, absolute, looping, chained).

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use crate::common::tree::{list_names, mknod, set_times_tree, snapshot_tree, Meta, Snapshot};

/// Names the generator uses; the distinctive ones are looked for in `/` and `/tmp` after
/// every apply.
pub const NAMES: &[&str] = &[
    "hx1", "hx2", "hx3", "nx1", "nx2", "out", "abs", "absout", "up", "upup", "self", "loop1",
    "loop2", "chain1", "dirlink", "flink", "rel", "fout", "fabs", "outside",
];
/// The distinctive ones among them (another process may well own a `/tmp/out`).
const STRAY_NAMES: &[&str] = &[
    "hx1", "hx2", "hx3", "nx1", "nx2", "absout", "loop1", "loop2", "chain1", "dirlink", "flink",
];
/// Components that are interesting but exist on every host (never checked for strays).
pub const HOST_NAMES: &[&str] = &["root", "tmp", "proc", "etc", "..", ".", ""];

pub struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let dir = tempfile::Builder::new()
            .prefix("hostile")
            .tempdir()
            .unwrap();
        let sb = Sandbox { dir };
        sb.populate();
        sb
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn root(&self) -> PathBuf {
        self.path().join("root")
    }

    fn outside(&self) -> PathBuf {
        self.path().join("outside")
    }

    fn populate(&self) {
        let o = self.outside();
        fs::create_dir(&o).unwrap();
        fs::write(o.join("hx1"), b"sentinel hx1").unwrap();
        fs::create_dir(o.join("hx2")).unwrap();
        fs::write(o.join("hx2/hx3"), b"sentinel hx2/hx3").unwrap();
        fs::create_dir(o.join("hx2/hx2")).unwrap();
        fs::write(o.join("hx3"), b"sentinel hx3").unwrap();
        symlink("/", o.join("abs")).unwrap();
        symlink("hx1", o.join("flink")).unwrap();
        mknod(&o.join("fifo"), rustix::fs::FileType::Fifo, 0o600, 0, 0);
        for (p, mode, uid) in [
            ("hx1", 0o640, 1234),
            ("hx2", 0o750, 1235),
            ("hx2/hx3", 0o4711, 0),
            ("hx3", 0o600, 99),
        ] {
            let p = o.join(p);
            std::os::unix::fs::lchown(&p, Some(uid), Some(uid + 1)).unwrap();
            fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
        }
        xattr::set(o.join("hx1"), "user.sentinel", b"s1").unwrap();
        xattr::set(o.join("hx2"), "user.sentinel", b"s2").unwrap();

        let r = self.root();
        fs::create_dir(&r).unwrap();
        fs::create_dir(r.join("hx1")).unwrap();
        fs::write(r.join("hx1/hx2"), b"inside hx1/hx2").unwrap();
        fs::write(r.join("hx3"), b"inside hx3").unwrap();
        fs::create_dir(r.join("hx2")).unwrap();
        fs::hard_link(r.join("hx3"), r.join("hx2/hx3")).unwrap();
        let abs_outside = o.to_str().unwrap().to_string();
        let abs_outside_hx3 = format!("{abs_outside}/hx3");
        for (target, name) in [
            ("../outside", "out"),
            ("/", "abs"),
            (abs_outside.as_str(), "absout"),
            ("..", "up"),
            ("../..", "upup"),
            (".", "self"),
            ("loop2", "loop1"),
            ("loop1", "loop2"),
            ("out", "chain1"),
            ("hx1", "dirlink"),
            ("hx3", "flink"),
            ("hx1/../../outside", "rel"),
            ("../outside/hx1", "fout"),
            (abs_outside_hx3.as_str(), "fabs"),
        ] {
            symlink(target, r.join(name)).unwrap();
        }
        // Fixed times everywhere, so a later touch shows.
        set_times_tree(self.path(), 1_500_000_000, 7);
    }

    /// Everything outside `root/`, and the identity of `root/` itself.
    pub fn snapshot(&self) -> Snapshot {
        let mut out = Snapshot::new();
        let top = self.path();
        out.insert(PathBuf::from("."), Meta::of(top, false));
        let root = Meta::of(&self.root(), false);
        // Its contents may change; only the identity and type must not.
        let root_id = Meta {
            mode: root.mode & 0o170000,
            ino: root.ino,
            ..Meta::default()
        };
        out.insert(PathBuf::from("root"), root_id);
        snapshot_tree(&self.outside(), Path::new("outside"), &mut out);
        out.insert(
            PathBuf::from("<entries>"),
            Meta::entry_list(&list_names(top)),
        );
        out
    }
}

/// Generator names that exist in `/`, `/tmp` or the sandbox's parent (should be none).
pub fn strays(sandbox_parent: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for dir in [Path::new("/"), Path::new("/tmp"), sandbox_parent] {
        for n in STRAY_NAMES {
            let p = dir.join(n);
            if fs::symlink_metadata(&p).is_ok() {
                v.push(p);
            }
        }
    }
    v.sort();
    v.dedup();
    v
}
