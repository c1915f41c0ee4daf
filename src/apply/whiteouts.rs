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
use super::unpacker::{display_at, key_join, ParentDir, Unpacker};
use super::{OverlayWhiteoutForm, WhiteoutMode};
use crate::error::{Error, Result};
use crate::overlay_forms::{opaque_value, OPAQUE_HAS_XATTR_WHITEOUTS, OPAQUE_YES};
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
            (WhiteoutMode::Overlay, true) => self.overlay_opaque(parent),
            (WhiteoutMode::Overlay, false) => self.overlay_whiteout(parent, orig, hdr),
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

/// A readable descriptor of the directory behind `dir` (an `O_PATH` one), for xattr calls.
fn open_dir_for_xattrs(dir: BorrowedFd<'_>) -> rustix::io::Result<OwnedFd> {
    rfs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

impl Unpacker<'_> {
    /// Overlay-mode opaque whiteout: `NS.overlay.opaque=y` on the directory.
    fn overlay_opaque(&mut self, parent: &ParentDir) -> Result<()> {
        let attr = self.overlay_ns.opaque_xattr();
        open_dir_for_xattrs(parent.fd.as_fd())
            .and_then(|d| rfs::fsetxattr(&d, attr, OPAQUE_YES, rfs::XattrFlags::empty()))
            .map_err(|e| {
                Error::path_detail(
                    "set xattr on",
                    self.display(&parent.comps, b""),
                    format!("(key {attr})"),
                    errno(e),
                )
            })?;
        // overlayfs reads no xattr whiteouts in an opaque directory, where they would show as
        // empty files; there is nothing below for them to hide, so they go.
        let key = join_comps(&parent.comps);
        for name in self.xattr_whiteouts_in.remove(&key).unwrap_or_default() {
            self.invalidate();
            remove_all(parent.fd.as_fd(), &name)
                .map_err(|e| Error::path("remove", self.display(&parent.comps, &name), e))?;
        }
        Ok(())
    }

    /// Overlay-mode whiteout of `orig`: a 0/0 character device, or an xattr whiteout,
    /// owned as the entry says.
    fn overlay_whiteout(
        &mut self,
        parent: &ParentDir,
        orig: &[u8],
        hdr: &EntryHeader,
    ) -> Result<()> {
        let dir = parent.fd.as_fd();
        let root_path = self.root_path;
        let at = || display_at(root_path, &parent.comps, orig);
        if !self.xattr_whiteouts {
            match rfs::mknodat(dir, orig, FileType::CharacterDevice, Mode::empty(), 0) {
                Ok(()) => return self.chown_whiteout(dir, orig, hdr, &at),
                Err(rustix::io::Errno::PERM)
                    if self.opts.overlay_whiteout == OverlayWhiteoutForm::Auto =>
                {
                    self.xattr_whiteouts = true;
                }
                Err(e) => return Err(Error::path("mknod whiteout", at(), errno(e))),
            }
        }
        let key = join_comps(&parent.comps);
        let ns = self.overlay_ns;
        let dir_error = |what: &'static str, e| {
            Error::path_detail(
                what,
                display_at(root_path, &parent.comps, b""),
                format!("(key {})", ns.opaque_xattr()),
                errno(e),
            )
        };
        let d = open_dir_for_xattrs(dir).map_err(|e| dir_error("open", e))?;
        let opaque = opaque_value(&d, ns).map_err(|e| dir_error("get xattr of", e))?;
        if opaque.as_deref() == Some(OPAQUE_YES) {
            // Nothing below an opaque directory to hide (see overlay_opaque).
            self.invalidate();
            return remove_all(dir, orig).map_err(|e| Error::path("remove", at(), e));
        }
        if opaque.is_none() {
            let mark = OPAQUE_HAS_XATTR_WHITEOUTS;
            rfs::fsetxattr(&d, ns.opaque_xattr(), mark, rfs::XattrFlags::empty())
                .map_err(|e| dir_error("set xattr on", e))?;
        }
        let fd = rfs::openat(
            dir,
            orig,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::path("create whiteout", at(), errno(e)))?;
        rfs::fsetxattr(&fd, ns.whiteout_xattr(), b"", rfs::XattrFlags::empty()).map_err(|e| {
            Error::path_detail(
                "set xattr on",
                at(),
                format!("(key {})", ns.whiteout_xattr()),
                errno(e),
            )
        })?;
        self.xattr_whiteouts_in
            .entry(key)
            .or_default()
            .push(orig.to_vec());
        self.chown_whiteout(dir, orig, hdr, &at)
    }

    fn chown_whiteout(
        &self,
        dir: BorrowedFd<'_>,
        orig: &[u8],
        hdr: &EntryHeader,
        at: &dyn Fn() -> PathBuf,
    ) -> Result<()> {
        let (uid, gid) = self.host_owner(hdr, at)?;
        match rfs::chownat(
            dir,
            orig,
            uid.map(rfs::Uid::from_raw),
            gid.map(rfs::Gid::from_raw),
            AtFlags::SYMLINK_NOFOLLOW,
        ) {
            Err(e) if self.skip_chown_error(e) => Ok(()),
            r => r.map_err(|e| {
                Error::path_detail(
                    "chown whiteout",
                    at(),
                    format!("(uid {}, gid {})", hdr.uid, hdr.gid),
                    errno(e),
                )
            }),
        }
    }
}
