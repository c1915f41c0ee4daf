//! Whiteout entries (containerd's `convertWhiteout`): `.wh.NAME` removes `NAME` and
//! `.wh..wh..opq` hides what lower layers put in its directory — by deleting (a plain directory
//! as the root), by writing overlayfs whiteouts (an overlay upperdir as the root), or by
//! keeping them as the files they are (an aufs rw branch as the root).

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};

use super::remove::{open_subdir, remove_all, DirStack};
use super::unpacker::{key_join, ParentDir, Unpacker};
use super::WhiteoutMode;
use crate::error::{Error, Result};
use crate::resolve::join_comps;
use crate::sys::errno;
use crate::tar::EntryHeader;
use crate::WHITEOUT_OPAQUE;

impl Unpacker<'_> {
    /// The whiteout `base` (`.wh.` + `orig`) in `parent`. True if the entry is still to be
    /// written as the file it is (containerd's `writeFile`).
    pub(super) fn convert_whiteout(
        &mut self,
        parent: &ParentDir,
        base: &[u8],
        orig: &[u8],
        hdr: &EntryHeader,
    ) -> Result<bool> {
        // containerd's `validateWhiteout`, in every mode: the name must stay in its directory.
        if base != WHITEOUT_OPAQUE && matches!(orig, b"" | b"." | b"..") {
            return Err(Error::InvalidArchive(format!(
                "invalid whiteout name: {}",
                String::from_utf8_lossy(base)
            )));
        }
        let opaque = base == WHITEOUT_OPAQUE;
        match (self.opts.whiteouts, opaque) {
            // containerd 1.x's `AufsConvertWhiteout`: aufs reads the whiteout from the branch.
            (WhiteoutMode::Aufs, _) => return Ok(true),
            (WhiteoutMode::Remove, true) => self.remove_opaque(parent),
            (WhiteoutMode::Remove, false) => {
                self.invalidate();
                remove_all(parent.fd.as_fd(), orig)
                    .map_err(|e| Error::path("remove", self.display(&parent.comps, orig), e))
            }
            (WhiteoutMode::Overlay, true) => set_overlay_opaque(parent.fd.as_fd()).map_err(|e| {
                Error::path(
                    "set trusted.overlay.opaque on",
                    self.display(&parent.comps, b""),
                    errno(e),
                )
            }),
            (WhiteoutMode::Overlay, false) => {
                let at = || self.display(&parent.comps, orig);
                let owner = self.host_owner(hdr, &at)?;
                overlay_whiteout(parent.fd.as_fd(), orig, owner, &at)
            }
        }
        .map_err(|e| match e {
            // containerd names the whiteout step, whatever call in it failed.
            Error::Path {
                path,
                detail,
                source,
                ..
            } => Error::Path {
                context: "convert whiteout",
                path,
                detail,
                source,
            },
            other => other,
        })
        .map(|()| false)
    }

    /// Remove-mode opaque whiteout, once per directory and layer.
    fn remove_opaque(&mut self, parent: &ParentDir) -> Result<()> {
        let key = join_comps(&parent.comps);
        if !self.opaque_done.insert(key.clone()) {
            return Ok(());
        }
        let dfd = rfs::openat(
            parent.fd.as_fd(),
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::path("open", self.display(&parent.comps, b""), errno(e)))?;
        self.invalidate();
        self.remove_unpacked_from(dfd, &key)
    }

    /// Delete every entry below the directory that this layer did not write, descending into
    /// directories it did write (containerd's walk), in byte order and without recursion (the
    /// layer may have written thousands of levels).
    fn remove_unpacked_from(&self, dir: OwnedFd, key: &[u8]) -> Result<()> {
        let mut stack = DirStack::default();
        // The key of the deepest directory, and where each level's own name starts in it.
        let mut cur = key.to_vec();
        let mut starts = Vec::new();
        stack
            .push(Vec::new(), dir)
            .map_err(|e| Error::path("read directory", self.display_key(&cur), e))?;
        loop {
            let Some((fd, name)) = stack.next_name() else {
                if stack.depth() == 1 {
                    return Ok(());
                }
                stack
                    .pop()
                    .map_err(|e| Error::path("read directory", self.display_key(&cur), e))?;
                cur.truncate(starts.pop().expect("one start per level below the first"));
                continue;
            };
            let child = key_join(&cur, &name);
            let st = match rfs::statat(fd, name.as_slice(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(rustix::io::Errno::NOENT) => continue,
                Err(e) => return Err(Error::path("lstat", self.display_key(&child), errno(e))),
            };
            if !self.unpacked.contains(&child) {
                remove_all(fd, &name)
                    .map_err(|e| Error::path("remove", self.display_key(&child), e))?;
            } else if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                let sub = match open_subdir(fd, &name) {
                    Ok(fd) => fd,
                    Err(rustix::io::Errno::NOENT) => continue,
                    Err(e) => return Err(Error::path("open", self.display_key(&child), errno(e))),
                };
                stack
                    .push(name, sub)
                    .map_err(|e| Error::path("read directory", self.display_key(&child), e))?;
                starts.push(cur.len());
                cur = child;
            }
        }
    }

    fn display_key(&self, key: &[u8]) -> PathBuf {
        self.root_path.join(OsStr::from_bytes(key))
    }
}

/// Overlay-mode opaque whiteout: `trusted.overlay.opaque=y` on the directory.
fn set_overlay_opaque(dir: BorrowedFd<'_>) -> rustix::io::Result<()> {
    let d = rfs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    rfs::fsetxattr(&d, "trusted.overlay.opaque", b"y", rfs::XattrFlags::empty())
}

/// Overlay-mode whiteout of `orig`: a 0/0 character device owned as the entry says (mapped).
fn overlay_whiteout(
    dir: BorrowedFd<'_>,
    orig: &[u8],
    (uid, gid): (Option<u32>, Option<u32>),
    at: &dyn Fn() -> PathBuf,
) -> Result<()> {
    rfs::mknodat(dir, orig, FileType::CharacterDevice, Mode::empty(), 0)
        .map_err(|e| Error::path("mknod whiteout", at(), errno(e)))?;
    rfs::chownat(
        dir,
        orig,
        uid.map(rfs::Uid::from_raw),
        gid.map(rfs::Gid::from_raw),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| Error::path("chown whiteout", at(), errno(e)))
}
