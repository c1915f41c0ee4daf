//! Go's `os.RemoveAll`, relative to a directory descriptor.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};

use crate::sys::errno;

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

/// Go's `os.RemoveAll` relative to a directory descriptor: a symlink is removed, not followed;
/// a missing entry is fine.
pub(crate) fn remove_all(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    match rfs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(rustix::io::Errno::ISDIR) | Err(rustix::io::Errno::PERM) => {}
        Err(e) => return Err(errno(e)),
    }
    let sub = match rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(e) => return Err(errno(e)),
    };
    for child in read_dir_names(&sub)? {
        remove_all(sub.as_fd(), &child)?;
    }
    match rfs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(errno(e)),
    }
}
