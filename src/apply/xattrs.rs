//! Extended attributes: those a layer entry carries (PAX `SCHILY.xattr.*` records), and
//! whole-list reads of a lower directory's (for parents copied from lowers).

use std::os::fd::BorrowedFd;
use std::path::PathBuf;

use rustix::fs::{self as rfs, AtFlags, FileType};

use super::unpacker::Node;
use crate::error::{Error, Result};
use crate::sys::{errno, proc_fd_path};
use crate::tar::pax::key::XATTR_PREFIX;
use crate::tar::EntryHeader;

/// `trusted.*` (admin attributes containerd refuses from archives) or overlayfs's own
/// metadata: never set from a layer's records.
pub(super) fn is_refused_xattr(key: &[u8]) -> bool {
    key.starts_with(b"trusted.") || crate::xattrs::is_overlay_xattr(key)
}

/// The entry's `SCHILY.xattr.*` records onto the new node, except `trusted.*` (refused, as
/// containerd does) and what the filesystem does not support.
pub(super) fn set_entry_xattrs(
    pfd: BorrowedFd<'_>,
    base: &[u8],
    node: &Node,
    hdr: &EntryHeader,
    show: &dyn Fn() -> PathBuf,
) -> Result<()> {
    for (k, v) in &hdr.pax {
        let Some(key) = k.strip_prefix(XATTR_PREFIX) else {
            continue;
        };
        if is_refused_xattr(key) {
            // containerd refuses admin attributes from archives (with a warning); overlay's
            // `user.overlay.*` metadata (honoured on `userxattr` mounts) is refused the same
            // way, so a layer cannot forge whiteouts, opaque dirs or redirects.
            continue;
        }
        let res = match node {
            Node::Fd(fd) => rfs::fsetxattr(fd, key, v, rfs::XattrFlags::empty()),
            Node::Name => rfs::lsetxattr(proc_fd_path(pfd, base), key, v, rfs::XattrFlags::empty()),
        };
        match res {
            Ok(()) | Err(rustix::io::Errno::NOTSUP) => {}
            Err(rustix::io::Errno::PERM)
                if key.starts_with(b"user.")
                    && rfs::statat(pfd, base, AtFlags::SYMLINK_NOFOLLOW).is_ok_and(|st| {
                        !matches!(
                            FileType::from_raw_mode(st.st_mode),
                            FileType::RegularFile | FileType::Directory
                        )
                    }) => {}
            Err(e) => {
                return Err(Error::path_detail(
                    "set xattr on",
                    show(),
                    format!("(key {})", String::from_utf8_lossy(key)),
                    errno(e),
                ))
            }
        }
    }

    Ok(())
}

/// Every xattr name of `path` (not following a symlink).
pub(super) fn llistxattr_all(path: &[u8]) -> Result<Vec<Vec<u8>>, rustix::io::Errno> {
    loop {
        let n = rfs::llistxattr_query(path)?;
        let mut buf = vec![0u8; n];
        match rfs::llistxattr(path, &mut buf[..]) {
            Ok(k) => {
                buf.truncate(k);
                return Ok(buf
                    .split(|&b| b == 0)
                    .filter(|s| !s.is_empty())
                    .map(<[u8]>::to_vec)
                    .collect());
            }
            Err(rustix::io::Errno::RANGE) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The value of xattr `name` of `path` (not following a symlink).
pub(super) fn lgetxattr_all(path: &[u8], name: &[u8]) -> Result<Vec<u8>, rustix::io::Errno> {
    loop {
        let n = rfs::lgetxattr_query(path, name)?;
        let mut buf = vec![0u8; n];
        match rfs::lgetxattr(path, name, &mut buf[..]) {
            Ok(k) => {
                buf.truncate(k);
                return Ok(buf);
            }
            Err(rustix::io::Errno::RANGE) => continue,
            Err(e) => return Err(e),
        }
    }
}
