//! Extended attributes a layer entry carries (PAX `SCHILY.xattr.*` records).

use std::os::fd::BorrowedFd;
use std::path::PathBuf;

use rustix::fs::{self as rfs, AtFlags, FileType};

use super::unpacker::Node;
use crate::error::{Error, Result};
use crate::sys::{errno, is_errno, lsetxattr_at};
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
            Node::Fd(fd) => rfs::fsetxattr(fd, key, v, rfs::XattrFlags::empty()).map_err(errno),
            // Not following the name: setxattrat, or /proc where the kernel lacks it.
            Node::Name => lsetxattr_at(pfd, base, key, v, false),
        };
        match res {
            Ok(()) => {}
            Err(e) if is_errno(&e, libc::ENOTSUP) => {}
            Err(e)
                if is_errno(&e, libc::EPERM)
                    && key.starts_with(b"user.")
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
                    e,
                ))
            }
        }
    }

    Ok(())
}
