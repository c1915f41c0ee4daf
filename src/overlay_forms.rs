//! The forms overlayfs reads whiteouts and opaque directories in, shared by apply (which
//! writes them) and the upperdir compare (which reads them back):
//!
//! - a whiteout is a 0/0 character device, or (kernel 6.7+, honoured in lower layers) a
//!   zero-size regular file carrying `NS.overlay.whiteout`, in a directory marked
//!   `NS.overlay.opaque=x` (which tells overlayfs to look for such files);
//! - an opaque directory carries `NS.overlay.opaque=y`.
//!
//! NS is `trusted` on a normal mount and `user` on a `userxattr` mount (the only kind a user
//! namespace may mount). See the kernel's Documentation/filesystems/overlayfs.rst.

use std::os::fd::AsFd;

use rustix::fs::{self as rfs, FileType};

/// Which xattr namespace the overlay mount keeps its metadata in: `trusted.overlay.*` (the
/// default) or `user.overlay.*` (the `userxattr` mount option).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OverlayXattrs {
    /// `trusted.overlay.*`: the default mount; needs CAP_SYS_ADMIN in the initial namespace.
    #[default]
    Trusted,
    /// `user.overlay.*`: a mount with the `userxattr` option (rootless).
    User,
}

impl OverlayXattrs {
    pub fn opaque_xattr(self) -> &'static str {
        match self {
            OverlayXattrs::Trusted => "trusted.overlay.opaque",
            OverlayXattrs::User => "user.overlay.opaque",
        }
    }

    pub fn whiteout_xattr(self) -> &'static str {
        match self {
            OverlayXattrs::Trusted => "trusted.overlay.whiteout",
            OverlayXattrs::User => "user.overlay.whiteout",
        }
    }

    pub(crate) fn prefix(self) -> &'static [u8] {
        match self {
            OverlayXattrs::Trusted => b"trusted.overlay.",
            OverlayXattrs::User => b"user.overlay.",
        }
    }

    pub(crate) fn other_prefix(self) -> &'static [u8] {
        match self {
            OverlayXattrs::Trusted => b"user.overlay.",
            OverlayXattrs::User => b"trusted.overlay.",
        }
    }
}

/// `NS.overlay.opaque` value of an opaque directory.
pub const OPAQUE_YES: &[u8] = b"y";
/// `NS.overlay.opaque` value of a directory that is not opaque but holds xattr whiteouts.
pub const OPAQUE_HAS_XATTR_WHITEOUTS: &[u8] = b"x";

/// The `NS.overlay.opaque` value of the open directory `dir`, if any (at most 1 byte is
/// meaningful; a longer value is returned cut, which matches neither `y` nor `x`).
pub fn opaque_value(dir: impl AsFd, ns: OverlayXattrs) -> rustix::io::Result<Option<Vec<u8>>> {
    let mut buf = [0u8; 2];
    match rfs::fgetxattr(dir, ns.opaque_xattr(), &mut buf[..]) {
        Ok(n) => Ok(Some(buf[..n].to_vec())),
        Err(rustix::io::Errno::NODATA) | Err(rustix::io::Errno::NOTSUP) => Ok(None),
        Err(rustix::io::Errno::RANGE) => Ok(Some(buf.to_vec())),
        Err(e) => Err(e),
    }
}

/// The open directory `dir` is opaque (`NS.overlay.opaque=y`).
pub fn is_opaque(dir: impl AsFd, ns: OverlayXattrs) -> rustix::io::Result<bool> {
    Ok(opaque_value(dir, ns)?.as_deref() == Some(OPAQUE_YES))
}

/// The entry `name` of the open directory `dir` (whose stat is `st`) is a whiteout in either
/// form. `dir_has_xattr_whiteouts` is whether `dir` carries `NS.overlay.opaque=x` (look it up
/// once per directory with [`opaque_value`]): overlayfs reads xattr whiteouts only there.
/// `NOSYS` when the name's xattr cannot be read without following it: the kernel has no
/// `getxattrat` (Linux 6.13) and `/proc` is not procfs.
pub fn is_whiteout(
    dir: impl AsFd,
    name: &[u8],
    st: &rfs::Stat,
    ns: OverlayXattrs,
    dir_has_xattr_whiteouts: bool,
) -> rustix::io::Result<bool> {
    match FileType::from_raw_mode(st.st_mode) {
        FileType::CharacterDevice => Ok(st.st_rdev == 0),
        FileType::RegularFile if dir_has_xattr_whiteouts && st.st_size == 0 => {
            // By directory and name, not followed (getxattrat, or /proc where the kernel
            // lacks it: crate::sys).
            let key = ns.whiteout_xattr().as_bytes();
            match crate::sys::lgetxattr_at(dir.as_fd(), name, key, &mut []) {
                Ok(_) => Ok(true),
                Err(e) => match rustix::io::Errno::from_io_error(&e) {
                    Some(rustix::io::Errno::NODATA) | Some(rustix::io::Errno::NOTSUP) => Ok(false),
                    Some(e) => Err(e),
                    // Neither getxattrat nor procfs.
                    None => Err(rustix::io::Errno::NOSYS),
                },
            }
        }
        _ => Ok(false),
    }
}
