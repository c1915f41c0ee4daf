//! Tree helpers: fixed times, and snapshots of everything about a tree that a write would
//! change, to show that nothing was written where nothing may be.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A directory's entry names, sorted.
pub fn list_names(dir: &Path) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .collect();
    v.sort();
    v
}

/// Make a fifo or a device node `major:minor` (mode as given, less the umask).
pub fn mknod(p: &Path, kind: rustix::fs::FileType, mode: u32, major: u32, minor: u32) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        p,
        kind,
        rustix::fs::Mode::from_raw_mode(mode),
        rustix::fs::makedev(major, minor),
    )
    .unwrap();
}

/// Set the access and modification times of `p` itself (not a symlink's target).
pub fn set_times(p: &Path, sec: i64, nsec: i64) {
    let t = rustix::fs::Timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    };
    let ts = rustix::fs::Timestamps {
        last_access: t,
        last_modification: t,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        p,
        &ts,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

/// [`set_times`] on `p` and everything below it.
pub fn set_times_tree(p: &Path, sec: i64, nsec: i64) {
    if fs::symlink_metadata(p).unwrap().is_dir() {
        for name in list_names(p) {
            set_times_tree(&p.join(OsStr::from_bytes(&name)), sec, nsec);
        }
    }
    set_times(p, sec, nsec);
}

/// What must not change about one path (atime aside: reading is not writing).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Meta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub nlink: u64,
    pub ino: u64,
    pub rdev: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
    /// File data, or a directory's entry names (escaped, so a difference reads well).
    pub content: Option<String>,
    pub link: Option<PathBuf>,
    pub xattrs: Vec<(OsString, Option<Vec<u8>>)>,
}

impl Meta {
    /// `p` itself, with a regular file's data when `read`.
    pub fn of(p: &Path, read: bool) -> Meta {
        let md = fs::symlink_metadata(p).unwrap();
        let ft = md.file_type();
        let mut xattrs: Vec<(OsString, Option<Vec<u8>>)> = xattr::list(p)
            .map(|l| {
                l.map(|k| {
                    let v = xattr::get(p, &k).ok().flatten();
                    (k, v)
                })
                .collect()
            })
            .unwrap_or_default();
        xattrs.sort();
        Meta {
            mode: md.mode(),
            uid: md.uid(),
            gid: md.gid(),
            size: md.size(),
            nlink: md.nlink(),
            ino: md.ino(),
            rdev: md.rdev(),
            mtime: (md.mtime(), md.mtime_nsec()),
            ctime: (md.ctime(), md.ctime_nsec()),
            content: (read && ft.is_file())
                .then(|| fs::read(p).unwrap().escape_ascii().to_string()),
            link: ft.is_symlink().then(|| fs::read_link(p).unwrap()),
            xattrs,
        }
    }

    /// A directory's entry names, as a pseudo-entry of a snapshot.
    pub fn entry_list(names: &[Vec<u8>]) -> Meta {
        Meta {
            content: Some(names.join(&b'/').escape_ascii().to_string()),
            ..Meta::default()
        }
    }
}

/// Paths (relative to where the snapshot started) and what they were.
pub type Snapshot = BTreeMap<PathBuf, Meta>;

/// Add `p` and everything below it to `out`, under the name `rel`: each path with its data,
/// and each directory's entry list as `<dir>/<entries>`.
pub fn snapshot_tree(p: &Path, rel: &Path, out: &mut Snapshot) {
    let m = Meta::of(p, true);
    let is_dir = m.mode & 0o170000 == 0o040000;
    out.insert(rel.to_path_buf(), m);
    if is_dir {
        let names = list_names(p);
        out.insert(rel.join("<entries>"), Meta::entry_list(&names));
        for n in names {
            let n = OsStr::from_bytes(&n);
            snapshot_tree(&p.join(n), &rel.join(n), out);
        }
    }
}

/// Every path that disappeared, appeared or changed between two snapshots.
pub fn diff_snapshots(before: &Snapshot, after: &Snapshot) -> Vec<String> {
    let mut d = Vec::new();
    for (k, v) in before {
        match after.get(k) {
            None => d.push(format!("{} disappeared", k.display())),
            Some(a) if a != v => d.push(format!(
                "{} changed:\n      before {v:?}\n      after  {a:?}",
                k.display()
            )),
            _ => {}
        }
    }
    for k in after.keys() {
        if !before.contains_key(k) {
            d.push(format!("{} appeared", k.display()));
        }
    }
    d
}

/// Everything below `root` (not `root` itself, whose times the applier does not set), in a
/// form two trees made apart can be compared in: ctimes cleared and inode numbers replaced by
/// the number of the path's hard-link group (in path order), so only which paths share an
/// inode remains.
pub fn comparable_snapshot(root: &Path) -> Snapshot {
    let mut out = Snapshot::new();
    let names = list_names(root);
    out.insert(PathBuf::from("<entries>"), Meta::entry_list(&names));
    for n in names {
        let n = OsStr::from_bytes(&n);
        snapshot_tree(&root.join(n), Path::new(n), &mut out);
    }
    let mut groups: BTreeMap<u64, u64> = BTreeMap::new();
    for m in out.values_mut() {
        m.ctime = (0, 0);
        // The `<entries>` pseudo-entries all have inode 0: one group, the same in both.
        let next = groups.len() as u64;
        m.ino = *groups.entry(m.ino).or_insert(next);
    }
    out
}
