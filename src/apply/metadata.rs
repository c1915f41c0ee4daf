//! Owner, xattrs, mode and times of an unpacked entry, set in containerd's order
//! (lchown, xattrs, chmod, chtimes) and with its rules for each.

use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};

use super::unpacker::{Node, Unpacker};
use super::xattrs::{is_refused_xattr, set_entry_xattrs};
use super::WhiteoutMode;
use crate::error::{Error, Result};
use crate::idmap::Direction;
use crate::overlay_forms::OverlayXattrs;
use crate::sys::{chmod_path_fd, errno};
use crate::tar::pax::key::XATTR_PREFIX;
use crate::tar::{EntryHeader, Nanos};

impl Unpacker<'_> {
    /// lchown, xattrs, chmod (not for symlinks) and times, in containerd's order.
    pub(super) fn set_metadata(
        &self,
        pfd: BorrowedFd<'_>,
        base: &[u8],
        node: &Node,
        hdr: &EntryHeader,
        show: &dyn Fn() -> PathBuf,
    ) -> Result<()> {
        let (uid, gid) = self.host_owner(hdr, show)?;
        let uid = uid.map(rfs::Uid::from_raw);
        let gid = gid.map(rfs::Gid::from_raw);
        if self.opts.same_owner {
            match node {
                Node::Fd(fd) => rfs::fchown(fd, uid, gid),
                Node::Name => rfs::chownat(pfd, base, uid, gid, AtFlags::SYMLINK_NOFOLLOW),
            }
            .or_else(|e| {
                if self.skip_chown_error(e) {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .map_err(|e| {
                Error::path_detail(
                    "lchown",
                    show(),
                    format!("(uid {}, gid {})", hdr.uid, hdr.gid),
                    errno(e),
                )
            })?;
        }

        if self.opts.whiteouts == WhiteoutMode::Overlay && self.overlay_ns == OverlayXattrs::User {
            refuse_rootless_xattrs(hdr, show)?;
        }
        set_entry_xattrs(pfd, base, node, hdr, show)?;

        let mode = Mode::from_raw_mode((hdr.mode & 0o7777) as u32);
        let times = entry_times(hdr);
        match node {
            Node::Fd(fd) => {
                rfs::fchmod(fd, mode).map_err(|e| Error::path("chmod", show(), errno(e)))?;
                rfs::futimens(fd, &times)
            }
            Node::Name => {
                // chmod through an O_PATH descriptor of the entry itself, never through a link
                // (fchmodat2, or /proc where the kernel lacks it: crate::sys).
                let fd = rfs::openat(
                    pfd,
                    base,
                    OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| Error::path("lstat", show(), errno(e)))?;
                let st = rfs::fstat(&fd).map_err(|e| Error::path("lstat", show(), errno(e)))?;
                if FileType::from_raw_mode(st.st_mode) != FileType::Symlink {
                    chmod_path_fd(fd.as_fd(), mode).map_err(|e| Error::path("chmod", show(), e))?;
                }
                rfs::utimensat(pfd, base, &times, AtFlags::SYMLINK_NOFOLLOW)
            }
        }
        .map_err(|e| Error::path("set times of", show(), errno(e)))
    }
}

impl Unpacker<'_> {
    /// The owner to give the entry on disk: the layer's, through the apply's ID maps (an ID
    /// left unchanged, all ones, stays unchanged).
    pub(super) fn host_owner(
        &self,
        hdr: &EntryHeader,
        show: &dyn Fn() -> PathBuf,
    ) -> Result<(Option<u32>, Option<u32>)> {
        let (uid, gid) = (owner_id(hdr.uid), owner_id(hdr.gid));
        let maps = &self.opts.id_maps;
        if maps.is_identity() || !self.opts.same_owner {
            return Ok((uid, gid));
        }
        let path = show();
        let (u, g) = maps.map_owner(
            Direction::ContainerToHost,
            uid.unwrap_or(0),
            gid.unwrap_or(0),
            &path.display(),
        )?;
        Ok((uid.map(|_| u), gid.map(|_| g)))
    }

    /// An lchown error that `ignore_chown_errors` skips: the ID is not mapped in this user
    /// namespace (EINVAL) or we may not give it away (EPERM).
    pub(super) fn skip_chown_error(&self, e: rustix::io::Errno) -> bool {
        self.opts.ignore_chown_errors
            && matches!(e, rustix::io::Errno::INVAL | rustix::io::Errno::PERM)
    }
}

/// Rootless overlay mode: a `trusted.*` xattr cannot be set in a user namespace (and
/// containerd's silent skip would lose it unnoticed), and a `user.overlay.*` one would be read
/// by the `userxattr` mount as overlay's own metadata (a forged whiteout, opaque dir or
/// redirect): either refuses the layer, naming the key.
fn refuse_rootless_xattrs(hdr: &EntryHeader, show: &dyn Fn() -> PathBuf) -> Result<()> {
    let refused = hdr.pax.iter().find_map(|(k, _)| {
        k.strip_prefix(XATTR_PREFIX)
            .filter(|key| is_refused_xattr(key))
    });
    match refused {
        None => Ok(()),
        Some(key) => Err(Error::path_detail(
            "set xattr on",
            show(),
            format!(
                "(key {}: trusted.* and user.overlay.* xattrs are refused when applying rootless, with user.overlay.* whiteouts)",
                String::from_utf8_lossy(key)
            ),
            std::io::Error::from_raw_os_error(libc::EPERM),
        )),
    }
}

/// containerd's `boundTime`: before 1970 or past int64 nanoseconds → the epoch.
fn bound_time(t: Nanos) -> Nanos {
    if t < 0 || t > i64::MAX as Nanos {
        0
    } else {
        t
    }
}

fn timespec(t: Nanos) -> rfs::Timespec {
    rfs::Timespec {
        tv_sec: (t / 1_000_000_000) as i64,
        tv_nsec: (t % 1_000_000_000) as _,
    }
}

/// atime = max(atime, mtime), both bounded, as containerd's `chtimes` call.
pub(super) fn entry_times(h: &EntryHeader) -> rfs::Timestamps {
    let atime = match h.atime {
        Some(a) if a >= h.mtime => a,
        _ => h.mtime,
    };
    rfs::Timestamps {
        last_access: timespec(bound_time(atime)),
        last_modification: timespec(bound_time(h.mtime)),
    }
}

/// A uid/gid as the kernel receives Go's `int`: truncated to 32 bits, all ones = unchanged.
pub(super) fn owner_id(v: i64) -> Option<u32> {
    let v = v as u32;
    (v != u32::MAX).then_some(v)
}
