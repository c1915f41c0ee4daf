//! Missing parent directories of an entry (containerd's `mkparent`): made 0755, or, with
//! overlay lowerdirs given, with the owner, mode, times and xattrs of the first lower that has
//! the directory.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};

use super::unpacker::Unpacker;
use crate::error::{Error, Result};
use crate::resolve::join_comps;
use crate::sys::{errno, is_errno, lgetxattr_all, llistxattr_all};

impl Unpacker<'_> {
    /// containerd's `mkparent`: every missing component is made 0755 (attributes from the
    /// first lower that has it); an existing non-directory is an error.
    pub(super) fn mkparent(&mut self, comps: &[Vec<u8>]) -> Result<OwnedFd> {
        let dflags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut cur: OwnedFd = self
            .root
            .open_dir(&[])
            .map_err(|e| Error::path("open root", self.root_path, e))?;
        let mut creating = false;
        for (i, c) in comps.iter().enumerate() {
            let here = || self.display(&comps[..=i], b"");
            if !creating {
                match rfs::statat(&cur, c.as_slice(), AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                        cur = rfs::openat(&cur, c.as_slice(), dflags, Mode::empty())
                            .map_err(|e| Error::path("open", here(), errno(e)))?;
                        continue;
                    }
                    Ok(_) => {
                        return Err(Error::path(
                            "mkparent",
                            here(),
                            io::Error::from_raw_os_error(libc::ENOTDIR),
                        ))
                    }
                    Err(rustix::io::Errno::NOENT) => creating = true,
                    Err(e) => return Err(Error::path("lstat", here(), errno(e))),
                }
            }
            match rfs::mkdirat(&cur, c.as_slice(), Mode::from_raw_mode(0o755)) {
                Ok(()) => {
                    let dfd = rfs::openat(
                        &cur,
                        c.as_slice(),
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|e| Error::path("open", here(), errno(e)))?;
                    rfs::fchmod(&dfd, Mode::from_raw_mode(0o755))
                        .map_err(|e| Error::path("chmod", here(), errno(e)))?;
                    self.copy_parent_info(&comps[..=i], &dfd)?;
                    cur = dfd;
                }
                Err(rustix::io::Errno::EXIST) => {
                    // Made meanwhile: fine if it is a directory (and then left as it is).
                    cur = rfs::openat(&cur, c.as_slice(), dflags, Mode::empty())
                        .map_err(|e| Error::path("mkdir", here(), errno(e)))?;
                }
                Err(e) => return Err(Error::path("mkdir", here(), errno(e))),
            }
        }
        Ok(cur)
    }

    /// Owner, mode, times and non-`trusted.*` xattrs of the directory at `comps` in the first
    /// lower that has it; a lower with a non-directory there stops the search.
    fn copy_parent_info(&self, comps: &[Vec<u8>], dst: &OwnedFd) -> Result<()> {
        let mut abs = b"/".to_vec();
        abs.extend_from_slice(&join_comps(comps));
        for (lower, lower_path) in self.lowers.iter().zip(&self.opts.parents) {
            let (lcomps, _) = lower
                .root_path(&abs)
                .map_err(|e| Error::path("resolve in parent", lower_path, e))?;
            let Some((lname, lparent)) = lcomps.split_last() else {
                continue;
            };
            let lshow = || {
                let mut p = lower_path.clone();
                for c in &lcomps {
                    p.push(OsStr::from_bytes(c));
                }
                p
            };
            let lpfd = match lower.open_dir(lparent) {
                Ok(fd) => fd,
                Err(e) if is_errno(&e, libc::ENOENT) => continue,
                Err(e) => return Err(Error::path("lstat", lshow(), e)),
            };
            let st = match rfs::statat(&lpfd, lname.as_slice(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(rustix::io::Errno::NOENT) => continue,
                Err(e) => return Err(Error::path("lstat", lshow(), errno(e))),
            };
            if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                break;
            }
            let show = || self.display(comps, b"");
            if let Err(e) = rfs::fchown(
                dst,
                Some(rfs::Uid::from_raw(st.st_uid)),
                Some(rfs::Gid::from_raw(st.st_gid)),
            ) {
                let same =
                    rfs::fstat(dst).is_ok_and(|d| d.st_uid == st.st_uid && d.st_gid == st.st_gid);
                if !(e == rustix::io::Errno::PERM && same) {
                    return Err(Error::path("chown", show(), errno(e)));
                }
            }
            rfs::fchmod(dst, Mode::from_raw_mode(st.st_mode & 0o7777))
                .map_err(|e| Error::path("chmod", show(), errno(e)))?;
            let times = rfs::Timestamps {
                last_access: rfs::Timespec {
                    tv_sec: st.st_atime as i64,
                    tv_nsec: st.st_atime_nsec as _,
                },
                last_modification: rfs::Timespec {
                    tv_sec: st.st_mtime as i64,
                    tv_nsec: st.st_mtime_nsec as _,
                },
            };
            rfs::futimens(dst, &times)
                .map_err(|e| Error::path("set times of", show(), errno(e)))?;

            // The lower's directory by its parent and name, not followed (listxattrat and
            // getxattrat, or /proc where the kernel lacks them: crate::sys).
            let absent = |e: &io::Error| is_errno(e, libc::ENOTSUP) || is_errno(e, libc::ENODATA);
            let mut names = Vec::new();
            match llistxattr_all(lpfd.as_fd(), lname) {
                Ok(n) => names = n,
                Err(e) if absent(&e) => {}
                Err(e) => return Err(Error::path("list xattrs of", lshow(), e)),
            }
            for name in names {
                if name.starts_with(b"trusted.") {
                    continue;
                }
                let value = match lgetxattr_all(lpfd.as_fd(), lname, &name) {
                    Ok(v) => v,
                    Err(e) if absent(&e) => continue,
                    Err(e) => return Err(Error::path("get xattr of", lshow(), e)),
                };
                match rfs::fsetxattr(dst, name.as_slice(), &value, rfs::XattrFlags::CREATE) {
                    Ok(())
                    | Err(rustix::io::Errno::NOTSUP)
                    | Err(rustix::io::Errno::NODATA)
                    | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(Error::path("set xattr on", show(), errno(e))),
                }
            }
            return Ok(());
        }
        Ok(())
    }
}
