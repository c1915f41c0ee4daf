//! Change detection between two trees by walking both (continuity's `fs.Changes` double walk,
//! docs/containerd.md §1).
//!
//! Each tree is walked pre-order with lstat and bytewise-sorted names; the two walks are merged
//! in path order where `/` sorts as byte 0. Memory holds one sorted listing per open directory.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use crate::control::CancelToken;
use crate::error::{Error, Result};
use crate::sys::errno;

/// What happened to a path between lower and upper (continuity's `ChangeKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// Unchanged, reported only for non-directories with more than one link.
    Unmodified,
    Add,
    Modify,
    Delete,
}

/// The lstat fields the diff uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Meta {
    pub dev: u64,
    pub ino: u64,
    /// Type and permission bits (`st_mode`).
    pub mode: u32,
    pub nlink: u64,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: i64,
}

impl Meta {
    pub(crate) fn from_stat(st: &rustix::fs::Stat) -> Meta {
        Meta {
            dev: st.st_dev,
            ino: st.st_ino,
            mode: st.st_mode,
            nlink: st.st_nlink,
            uid: st.st_uid,
            gid: st.st_gid,
            rdev: st.st_rdev,
            size: st.st_size as u64,
            mtime: st.st_mtime,
            mtime_nsec: st.st_mtime_nsec as i64,
        }
    }

    pub(crate) fn file_type(&self) -> FileType {
        FileType::from_raw_mode(self.mode)
    }

    pub(crate) fn is_dir(&self) -> bool {
        self.file_type() == FileType::Directory
    }

    /// Whether `other` is the same inode of the same type (what a walk saw is what was opened).
    fn same_inode(&self, other: &Meta) -> bool {
        self.dev == other.dev && self.ino == other.ino && self.file_type() == other.file_type()
    }
}

/// The error when what sits at a path is no longer what the walk saw there.
pub(crate) fn changed_during_diff(path: &Path) -> Error {
    Error::path("read", path, io::Error::other("changed during diff"))
}

/// Where an entry is: its parent directory's descriptor and its name. Every read goes through
/// these, never following a symlink, so a rename racing the diff cannot send it outside the
/// tree (issue 10 finding 1).
#[derive(Clone, Copy)]
pub(crate) struct At<'a> {
    pub dir: BorrowedFd<'a>,
    pub name: &'a [u8],
    /// The tree's root and the `/`-rooted path, for messages only.
    pub root: &'a Path,
    pub rel: &'a [u8],
}

impl At<'_> {
    pub(crate) fn display(&self) -> PathBuf {
        display_path(self.root, self.rel)
    }

    fn open_checked(&self, flags: OFlags, meta: &Meta) -> Result<OwnedFd> {
        let name = std::ffi::OsStr::from_bytes(self.name);
        // O_NONBLOCK: a FIFO or device swapped in never blocks the open (finding 2).
        let fd = rustix::fs::openat(
            self.dir,
            name,
            flags | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
            Mode::empty(),
        )
        .map_err(|e| match e {
            rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => {
                changed_during_diff(&self.display())
            }
            e => Error::path("open", self.display(), errno(e)),
        })?;
        let st =
            rustix::fs::fstat(&fd).map_err(|e| Error::path("fstat", self.display(), errno(e)))?;
        if !Meta::from_stat(&st).same_inode(meta) {
            return Err(changed_during_diff(&self.display()));
        }
        Ok(fd)
    }

    /// Open the regular file the walk saw here for reading.
    pub(crate) fn open_file(&self, meta: &Meta) -> Result<File> {
        if meta.file_type() != FileType::RegularFile {
            return Err(changed_during_diff(&self.display()));
        }
        Ok(File::from(self.open_checked(OFlags::RDONLY, meta)?))
    }

    /// Open the directory the walk saw here.
    pub(crate) fn open_dir(&self, meta: &Meta) -> Result<OwnedFd> {
        self.open_checked(OFlags::RDONLY | OFlags::DIRECTORY, meta)
    }

    pub(crate) fn read_link(&self) -> Result<Vec<u8>> {
        let name = std::ffi::OsStr::from_bytes(self.name);
        rustix::fs::readlinkat(self.dir, name, Vec::new())
            .map(|t| t.into_bytes())
            .map_err(|e| Error::path("readlink", self.display(), errno(e)))
    }

    /// The `security.capability` xattr (not following symlinks); missing or unsupported is
    /// empty, as in containerd.
    pub(crate) fn capability(&self) -> Result<Option<Vec<u8>>> {
        self.xattr("security.capability")
            .map(|v| v.filter(|v| !v.is_empty()))
    }

    /// The xattr `name` of this entry, not following it if it is a symlink; `None` when it
    /// has none or the filesystem has no xattrs.
    pub(crate) fn xattr(&self, name: impl AsRef<std::ffi::OsStr>) -> Result<Option<Vec<u8>>> {
        let name = name.as_ref();
        match crate::sys::lgetxattr_all(self.dir, self.name, name.as_bytes()) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => Ok(None),
            Err(e) => Err(Error::path_detail(
                "get xattr of",
                self.display(),
                name.to_string_lossy().into_owned(),
                e,
            )),
        }
    }

    /// The names of this entry's xattrs (not following symlinks).
    pub(crate) fn xattr_names(&self) -> Result<Vec<std::ffi::OsString>> {
        // By directory and name, never by full path (which a concurrent rename could send
        // elsewhere): listxattrat, or /proc where the kernel lacks it (crate::sys).
        match crate::sys::llistxattr_all(self.dir, self.name) {
            Ok(v) => Ok(v.into_iter().map(std::ffi::OsString::from_vec).collect()),
            Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => Ok(Vec::new()),
            Err(e) => Err(Error::path("list xattrs of", self.display(), e)),
        }
    }
}

/// `root` joined with the `/`-rooted `rel`, for messages.
pub(crate) fn display_path(root: &Path, rel: &[u8]) -> PathBuf {
    let rel = rel.strip_prefix(b"/").unwrap_or(rel);
    if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(std::ffi::OsStr::from_bytes(rel))
    }
}

/// Open `root`, which must be a directory (not a symlink to one), and lstat it.
pub(crate) fn open_root(root: &Path) -> Result<(OwnedFd, Meta)> {
    let not_dir = || {
        Error::path(
            "walk",
            root,
            io::Error::new(io::ErrorKind::InvalidInput, "not a directory"),
        )
    };
    let fd = rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP => not_dir(),
        e => Error::path("open", root, errno(e)),
    })?;
    let st = rustix::fs::fstat(&fd).map_err(|e| Error::path("fstat", root, errno(e)))?;
    Ok((fd, Meta::from_stat(&st)))
}

/// lstat `name` in `dir`.
pub(crate) fn lstat_at(
    dir: BorrowedFd<'_>,
    name: &[u8],
    display: impl Fn() -> PathBuf,
) -> Result<Meta> {
    rustix::fs::statat(
        dir,
        std::ffi::OsStr::from_bytes(name),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map(|st| Meta::from_stat(&st))
    .map_err(|e| Error::path("lstat", display(), errno(e)))
}

/// The names in the directory `dir`, bytewise sorted, without `.` and `..`.
pub(crate) fn list_dir(dir: BorrowedFd<'_>, display: impl Fn() -> PathBuf) -> Result<Vec<Vec<u8>>> {
    let mut names = Vec::new();
    let d = rustix::fs::Dir::read_from(dir)
        .map_err(|e| Error::path("read directory", display(), errno(e)))?;
    for entry in d {
        let entry = entry.map_err(|e| Error::path("read directory", display(), errno(e)))?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    names.sort_unstable();
    Ok(names)
}

/// One path seen by a walk: `/`-rooted relative path and lstat.
pub(crate) struct WalkEntry {
    pub path: Vec<u8>,
    pub meta: Meta,
}

impl WalkEntry {
    pub(crate) fn name(&self) -> &[u8] {
        let i = self
            .path
            .iter()
            .rposition(|&c| c == b'/')
            .map_or(0, |i| i + 1);
        &self.path[i..]
    }
}

/// How many directory descriptors one walk keeps open: deeper levels are closed and opened
/// again through `..` (checked to be the same directory) when the walk returns to them, so a
/// deep tree does not exhaust `RLIMIT_NOFILE`.
pub(crate) const MAX_OPEN_DIRS: usize = 16;

/// Reopen the directory at `rel` whose descriptor a walk closed, through `..` of its open child
/// `child`, checked to be the directory `meta` the walk saw there (else "changed during diff").
pub(crate) fn reopen_parent(
    child: BorrowedFd<'_>,
    meta: &Meta,
    root: &Path,
    rel: &[u8],
) -> Result<OwnedFd> {
    At {
        dir: child,
        name: b"..",
        root,
        rel,
    }
    .open_dir(meta)
}

struct DirFrame {
    rel: Vec<u8>,
    /// Closed for frames more than [`MAX_OPEN_DIRS`] levels above the top.
    fd: Option<OwnedFd>,
    meta: Meta,
    names: std::vec::IntoIter<Vec<u8>>,
}

/// A pre-order walk of one tree (root excluded), like Go's `filepath.Walk`, relative to
/// directory descriptors opened without following symlinks.
pub(crate) struct Walker {
    root: PathBuf,
    root_fd: Option<(OwnedFd, Meta)>,
    stack: Vec<DirFrame>,
    /// A directory just yielded, to be listed before the next entry.
    pending_dir: Option<(Vec<u8>, Meta)>,
}

impl Walker {
    /// Start walking `root`, which must be a directory.
    pub(crate) fn new(root: &Path) -> Result<Self> {
        let (fd, meta) = open_root(root)?;
        Ok(Walker {
            root: root.to_path_buf(),
            root_fd: Some((fd, meta)),
            stack: Vec::new(),
            pending_dir: None,
        })
    }

    /// Where `entry` (the last one returned) is.
    pub(crate) fn at<'a>(&'a self, entry: &'a WalkEntry) -> At<'a> {
        let top = self.stack.last().and_then(|f| f.fd.as_ref());
        At {
            dir: top.expect("the top directory is open").as_fd(),
            name: entry.name(),
            root: &self.root,
            rel: &entry.path,
        }
    }

    fn push_dir(&mut self, rel: Vec<u8>, fd: OwnedFd, meta: Meta) -> Result<()> {
        let names = list_dir(fd.as_fd(), || display_path(&self.root, &rel))?;
        self.stack.push(DirFrame {
            rel,
            fd: Some(fd),
            meta,
            names: names.into_iter(),
        });
        if self.stack.len() > MAX_OPEN_DIRS {
            let i = self.stack.len() - 1 - MAX_OPEN_DIRS;
            self.stack[i].fd = None;
        }
        Ok(())
    }

    fn open_pending(&mut self, rel: Vec<u8>, meta: Meta) -> Result<()> {
        let top = self.stack.last().expect("a pending directory has a parent");
        let fd = {
            let name_at = rel.iter().rposition(|&c| c == b'/').map_or(0, |i| i + 1);
            let at = At {
                dir: top.fd.as_ref().expect("the top directory is open").as_fd(),
                name: &rel[name_at..],
                root: &self.root,
                rel: &rel,
            };
            at.open_dir(&meta)?
        };
        self.push_dir(rel, fd, meta)
    }

    /// Leave the top directory; reopen its parent through `..` if it was closed.
    fn pop_dir(&mut self) -> Result<()> {
        let child = self.stack.pop().expect("a directory to leave");
        let Some(parent) = self.stack.last_mut() else {
            return Ok(());
        };
        if parent.fd.is_none() {
            let child_fd = child.fd.as_ref().expect("the top directory is open");
            parent.fd = Some(reopen_parent(
                child_fd.as_fd(),
                &parent.meta,
                &self.root,
                &parent.rel,
            )?);
        }
        Ok(())
    }

    /// The next entry, or `None` at the end.
    pub(crate) fn next_entry(&mut self) -> Result<Option<WalkEntry>> {
        if let Some((fd, meta)) = self.root_fd.take() {
            self.push_dir(Vec::new(), fd, meta)?;
        }
        if let Some((rel, meta)) = self.pending_dir.take() {
            self.open_pending(rel, meta)?;
        }
        loop {
            let Some(top) = self.stack.last_mut() else {
                return Ok(None);
            };
            let Some(name) = top.names.next() else {
                self.pop_dir()?;
                continue;
            };
            let mut path = Vec::with_capacity(top.rel.len() + 1 + name.len());
            path.extend_from_slice(&top.rel);
            path.push(b'/');
            path.extend_from_slice(&name);
            let dir = top.fd.as_ref().expect("the top directory is open").as_fd();
            let meta = lstat_at(dir, &name, || display_path(&self.root, &path))?;
            if meta.is_dir() {
                self.pending_dir = Some((path.clone(), meta));
            }
            return Ok(Some(WalkEntry { path, meta }));
        }
    }
}

/// continuity's `directoryCompare`: bytewise with `/` as byte 0, a prefix first.
pub(crate) fn directory_compare(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    let map = |c: u8| if c == b'/' { 0 } else { c };
    a.iter().map(|&c| map(c)).cmp(b.iter().map(|&c| map(c)))
}

pub(crate) fn is_linked(meta: &Meta) -> bool {
    !meta.is_dir() && meta.nlink > 1
}

/// continuity's `sameFile`.
pub(crate) fn same_file(
    lower: (&At, &Meta),
    upper: (&At, &Meta),
    cancel: Option<&CancelToken>,
) -> Result<bool> {
    let ((a1, m1), (a2, m2)) = (lower, upper);
    if m1.dev == m2.dev && m1.ino == m2.ino {
        return Ok(true);
    }
    if m1.mode != m2.mode || m1.uid != m2.uid || m1.gid != m2.gid || m1.rdev != m2.rdev {
        return Ok(false);
    }
    if a1.capability()? != a2.capability()? {
        return Ok(false);
    }
    if !m1.is_dir() {
        if m1.size != m2.size || m1.mtime != m2.mtime {
            return Ok(false);
        }
        let (n1, n2) = (m1.mtime_nsec, m2.mtime_nsec);
        if n1 == 0 && n2 == 0 {
            if m1.file_type() == FileType::Symlink {
                return Ok(a1.read_link()? == a2.read_link()?);
            }
            if m1.size == 0 {
                return Ok(true);
            }
            return same_content(lower, upper, cancel);
        } else if n1 != n2 {
            return Ok(false);
        }
    }
    Ok(true)
}

fn read_full(f: &mut File, buf: &mut [u8], path: impl Fn() -> PathBuf) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::path("read", path(), e)),
        }
    }
    Ok(n)
}

fn same_content(
    lower: (&At, &Meta),
    upper: (&At, &Meta),
    cancel: Option<&CancelToken>,
) -> Result<bool> {
    let mut f1 = lower.0.open_file(lower.1)?;
    let mut f2 = upper.0.open_file(upper.1)?;
    let mut b1 = vec![0u8; 64 * 1024];
    let mut b2 = vec![0u8; 64 * 1024];
    loop {
        crate::control::check(cancel)?;
        let n1 = read_full(&mut f1, &mut b1, || lower.0.display())?;
        let n2 = read_full(&mut f2, &mut b2, || upper.0.display())?;
        if n1 != n2 || b1[..n1] != b2[..n2] {
            return Ok(false);
        }
        if n1 < b1.len() {
            return Ok(true);
        }
    }
}

/// A change as the change writer receives it: the upper entry's lstat and place for adds,
/// modifies and unmodified hardlinks, nothing for deletes.
pub(crate) struct Change<'a> {
    pub kind: ChangeKind,
    pub path: &'a [u8],
    pub upper: Option<(At<'a>, &'a Meta)>,
}

/// Walk `lower` and `upper` and call `f` for every change in continuity's order.
pub(crate) fn changes(
    lower: &Path,
    upper: &Path,
    cancel: Option<&CancelToken>,
    mut f: impl FnMut(Change) -> Result<()>,
) -> Result<()> {
    // An empty lower path is no lower (continuity's single-walk `addDirChanges`): every
    // upper entry is an add.
    let mut w1 = match lower.as_os_str().is_empty() {
        true => None,
        false => Some(Walker::new(lower)?),
    };
    let mut w2 = Walker::new(upper)?;
    let (mut done1, mut done2) = (w1.is_none(), false);
    let (mut e1, mut e2): (Option<WalkEntry>, Option<WalkEntry>) = (None, None);
    // A deleted directory (or one that became a non-directory), `path/`: deletes under it are
    // implied.
    let mut rmdir: Vec<u8> = Vec::new();
    loop {
        crate::control::check(cancel)?;
        if let (None, false, Some(w)) = (&e1, done1, w1.as_mut()) {
            e1 = w.next_entry()?;
            done1 = e1.is_none();
        }
        if e2.is_none() && !done2 {
            e2 = w2.next_entry()?;
            done2 = e2.is_none();
        }
        let order = match (&e1, &e2) {
            (None, None) => return Ok(()),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(a), Some(b)) => directory_compare(&a.path, &b.path),
        };
        match order {
            std::cmp::Ordering::Greater => {
                rmdir.clear();
                let added = e2.take().expect("upper entry");
                f(Change {
                    kind: ChangeKind::Add,
                    path: &added.path,
                    upper: Some((w2.at(&added), &added.meta)),
                })?;
            }
            std::cmp::Ordering::Less => {
                let deleted = e1.take().expect("lower entry");
                if !rmdir.is_empty() && deleted.path.starts_with(&rmdir) {
                    continue;
                } else if deleted.meta.is_dir() {
                    rmdir = [&deleted.path[..], b"/"].concat();
                } else {
                    rmdir.clear();
                }
                f(Change {
                    kind: ChangeKind::Delete,
                    path: &deleted.path,
                    upper: None,
                })?;
            }
            std::cmp::Ordering::Equal => {
                let (l, u) = (
                    e1.take().expect("lower entry"),
                    e2.take().expect("upper entry"),
                );
                let lower_walker = w1
                    .as_ref()
                    .expect("a lower entry comes from the lower walker");
                let (la, ua) = (lower_walker.at(&l), w2.at(&u));
                let same = same_file((&la, &l.meta), (&ua, &u.meta), cancel)?;
                if l.meta.is_dir() && !u.meta.is_dir() {
                    rmdir = [&l.path[..], b"/"].concat();
                } else {
                    rmdir.clear();
                }
                let kind = if same {
                    if !is_linked(&u.meta) {
                        continue;
                    }
                    ChangeKind::Unmodified
                } else {
                    ChangeKind::Modify
                };
                f(Change {
                    kind,
                    path: &u.path,
                    upper: Some((ua, &u.meta)),
                })?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering;

    #[test]
    fn slash_sorts_before_every_other_byte() {
        assert_eq!(directory_compare(b"/a/b", b"/a b"), Ordering::Less);
        assert_eq!(directory_compare(b"/a", b"/a/b"), Ordering::Less);
        assert_eq!(directory_compare(b"/a/b", b"/a"), Ordering::Greater);
        assert_eq!(directory_compare(b"/a/\x01", b"/a\x01"), Ordering::Less);
        assert_eq!(directory_compare(b"/a", b"/a"), Ordering::Equal);
    }
}
