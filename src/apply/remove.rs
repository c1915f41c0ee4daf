//! Go's `os.RemoveAll`, relative to a directory descriptor, without recursion and with a
//! bounded number of open descriptors: a layer (or a lower tree) may be thousands of
//! directories deep, and neither a library caller's stack (a C caller's 2 MiB thread) nor its
//! `RLIMIT_NOFILE` may decide whether a whiteout succeeds.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};

use crate::sys::errno;

/// Directory descriptors one walk keeps open; deeper levels are reopened through `..` on the
/// way back up.
const OPEN_LEVELS: usize = 16;

/// The names in a directory, `.` and `..` left out.
pub(super) fn read_dir_names(dir: &OwnedFd) -> io::Result<Vec<Vec<u8>>> {
    let mut names = Vec::new();
    let d = rfs::Dir::read_from(dir).map_err(errno)?;
    for ent in d {
        let ent = ent.map_err(errno)?;
        let n = ent.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(n.to_vec());
        }
    }
    Ok(names)
}

/// `name` in `dir` opened as a directory to read, never through a symlink.
pub(super) fn open_subdir(dir: BorrowedFd<'_>, name: &[u8]) -> rustix::io::Result<OwnedFd> {
    rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

struct Level {
    name: Vec<u8>,
    /// Open while the level is among the deepest [`OPEN_LEVELS`].
    fd: Option<OwnedFd>,
    dev: u64,
    ino: u64,
    /// Names still to visit, the next one last.
    pending: Vec<Vec<u8>>,
}

/// The directories of a depth-first walk, deepest last, each with the names left to visit.
#[derive(Default)]
pub(super) struct DirStack {
    levels: Vec<Level>,
}

impl DirStack {
    /// Descend into `fd` (the directory `name` of the current level), listing its names; they
    /// come back from [`DirStack::next_name`] in byte order.
    pub(super) fn push(&mut self, name: Vec<u8>, fd: OwnedFd) -> io::Result<()> {
        let st = rfs::fstat(&fd).map_err(errno)?;
        let mut pending = read_dir_names(&fd)?;
        pending.sort_unstable_by(|a, b| b.cmp(a));
        if self.levels.len() >= OPEN_LEVELS {
            let i = self.levels.len() - OPEN_LEVELS;
            self.levels[i].fd = None;
        }
        self.levels.push(Level {
            name,
            fd: Some(fd),
            dev: st.st_dev,
            ino: st.st_ino,
            pending,
        });
        Ok(())
    }

    pub(super) fn depth(&self) -> usize {
        self.levels.len()
    }

    /// The deepest directory and the next name in it to visit.
    pub(super) fn next_name(&mut self) -> Option<(BorrowedFd<'_>, Vec<u8>)> {
        let top = self.levels.last_mut()?;
        let name = top.pending.pop()?;
        let fd = top.fd.as_ref().expect("the deepest level is open").as_fd();
        Some((fd, name))
    }

    /// Leave the deepest directory, whose names are all visited: its name, and its parent's
    /// descriptor when the parent is on the stack. A parent closed meanwhile is reopened as
    /// `..` of the child and must be the directory the walk came through (a directory moved
    /// during the walk is an error, never a way elsewhere).
    pub(super) fn pop(&mut self) -> io::Result<Option<(Vec<u8>, Option<BorrowedFd<'_>>)>> {
        let Some(done) = self.levels.pop() else {
            return Ok(None);
        };
        if let Some(parent) = self.levels.last_mut() {
            if parent.fd.is_none() {
                let child = done.fd.as_ref().expect("the deepest level is open");
                let fd = open_subdir(child.as_fd(), b"..").map_err(errno)?;
                let st = rfs::fstat(&fd).map_err(errno)?;
                if (st.st_dev, st.st_ino) != (parent.dev, parent.ino) {
                    return Err(io::Error::other("a directory moved during the removal"));
                }
                parent.fd = Some(fd);
            }
        }
        let parent_fd = self
            .levels
            .last()
            .map(|p| p.fd.as_ref().expect("just opened").as_fd());
        Ok(Some((done.name, parent_fd)))
    }
}

/// Go's `os.RemoveAll` relative to a directory descriptor: a symlink is removed, not followed;
/// a missing entry is fine.
pub(crate) fn remove_all(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    if !unlink_non_dir(dir, name)? {
        return Ok(());
    }
    let mut stack = DirStack::default();
    match open_subdir(dir, name) {
        Ok(fd) => stack.push(name.to_vec(), fd)?,
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(e) => return Err(errno(e)),
    }
    loop {
        if let Some((fd, child)) = stack.next_name() {
            if unlink_non_dir(fd, &child)? {
                match open_subdir(fd, &child) {
                    Ok(sub) => stack.push(child, sub)?,
                    Err(rustix::io::Errno::NOENT) => {}
                    Err(e) => return Err(errno(e)),
                }
            }
            continue;
        }
        let Some((done, parent)) = stack.pop()? else {
            return Ok(());
        };
        match rfs::unlinkat(parent.unwrap_or(dir), done, AtFlags::REMOVEDIR) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(errno(e)),
        }
    }
}

/// Unlink `name` unless it is a directory: whether a directory is left to empty.
fn unlink_non_dir(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<bool> {
    match rfs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(false),
        Err(rustix::io::Errno::ISDIR) | Err(rustix::io::Errno::PERM) => Ok(true),
        Err(e) => Err(errno(e)),
    }
}
