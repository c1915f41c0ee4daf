//! Small system-call helpers shared by the resolver, apply and the walks, and the calls that
//! reach a node by directory and name where rustix has no such form: chmod of an `O_PATH`
//! descriptor, and xattrs of a name that is not followed if it is a symlink.
//!
//! Those calls go, in order: to the kernel's fd-relative call (`fchmodat2`, Linux 6.6;
//! `setxattrat`/`getxattrat`/`listxattrat`, Linux 6.13, through the internal crate
//! linux-at); where it says ENOSYS (an older kernel, or a seccomp filter that does not know
//! it), through `/proc/self/fd/N[/NAME]`, but only if `/proc` is procfs (checked once, as
//! libpathrs does, so that a fake `/proc` cannot redirect the call); otherwise they fail,
//! saying what is missing. Never by full path: a concurrent rename or symlink swap could send
//! that outside the tree (issue 10 finding 1).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::OnceLock;

use linux_at::AtFlags;
use rustix::fs::{self as rfs, Mode, OFlags};

/// A rustix error as the `io::Error` the rest of the crate carries.
pub(crate) fn errno(e: rustix::io::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

pub(crate) fn is_errno(e: &io::Error, n: i32) -> bool {
    e.raw_os_error() == Some(n)
}

/// `/proc/self/fd/N[/name]`: reaches `name` in the directory `dir` for the calls that have no
/// `*at` form on older kernels. Only after [`procfs_usable`] said yes.
fn proc_fd_path(dir: BorrowedFd<'_>, name: &[u8]) -> Vec<u8> {
    let mut p = format!("/proc/self/fd/{}", dir.as_raw_fd()).into_bytes();
    if !name.is_empty() {
        p.push(b'/');
        p.extend_from_slice(name);
    }
    p
}

/// procfs's root inode (the kernel's PROC_ROOT_INO).
const PROC_ROOT_INO: u64 = 1;

/// Whether `/proc` is procfs's root and `/proc/self/fd` procfs too (not a tmpfs or a bind
/// mount of a directory of symlinks someone made to look like it): only then do its fd paths
/// reach our descriptors. Checked once: mounting over /proc later needs CAP_SYS_ADMIN over
/// this mount namespace, which a layer does not have.
fn procfs_usable() -> bool {
    static USABLE: OnceLock<bool> = OnceLock::new();
    *USABLE.get_or_init(|| {
        let check = || -> rustix::io::Result<bool> {
            let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let proc = rfs::open("/proc", flags, Mode::empty())?;
            if rfs::fstatfs(&proc)?.f_type != rfs::PROC_SUPER_MAGIC
                || rfs::fstat(&proc)?.st_ino != PROC_ROOT_INO
            {
                return Ok(false);
            }
            // `self` is procfs's own symlink to our /proc/PID.
            let fds = rfs::openat(&proc, "self/fd", flags - OFlags::NOFOLLOW, Mode::empty())?;
            Ok(rfs::fstatfs(&fds)?.f_type == rfs::PROC_SUPER_MAGIC)
        };
        check().unwrap_or(false)
    })
}

/// The error when neither the fd-relative call nor procfs is there.
fn unavailable(call: &str, since: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!(
            "needs the {call} system call (Linux {since}+; this kernel or its seccomp filter refuses it) or procfs mounted on /proc"
        ),
    )
}

/// The kernel (or a seccomp filter) has no such call.
fn no_such_call(e: &io::Error) -> bool {
    is_errno(e, libc::ENOSYS)
}

/// Set the mode of the node `fd` (an `O_PATH` descriptor of it, not of a symlink).
pub(crate) fn chmod_path_fd(fd: BorrowedFd<'_>, mode: Mode) -> io::Result<()> {
    match linux_at::fchmodat2(fd, b"", mode.as_raw_mode(), AtFlags::EMPTY_PATH) {
        Err(e) if no_such_call(&e) => {}
        r => return r,
    }
    if !procfs_usable() {
        return Err(unavailable("fchmodat2", "6.6"));
    }
    rfs::chmod(proc_fd_path(fd, b""), mode).map_err(errno)
}

/// The lookup flags for `name` in a directory: never following it; an empty name (which no
/// caller passes) is the directory itself.
fn nofollow(name: &[u8]) -> AtFlags {
    if name.is_empty() {
        AtFlags::EMPTY_PATH
    } else {
        AtFlags::SYMLINK_NOFOLLOW
    }
}

/// `lsetxattr` of `name` in `dir`: set the xattr `key` of the entry itself, not following it.
pub(crate) fn lsetxattr_at(
    dir: BorrowedFd<'_>,
    name: &[u8],
    key: &[u8],
    value: &[u8],
    create: bool,
) -> io::Result<()> {
    let (xflags, rflags) = if create {
        (linux_at::XattrFlags::CREATE, rfs::XattrFlags::CREATE)
    } else {
        (linux_at::XattrFlags::NONE, rfs::XattrFlags::empty())
    };
    match linux_at::setxattrat(dir, name, nofollow(name), key, value, xflags) {
        Err(e) if no_such_call(&e) => {}
        r => return r,
    }
    if !procfs_usable() {
        return Err(unavailable("setxattrat", "6.13"));
    }
    rfs::lsetxattr(proc_fd_path(dir, name), key, value, rflags).map_err(errno)
}

/// `lgetxattr` of `name` in `dir` into `buf` (empty: the value's size only).
pub(crate) fn lgetxattr_at(
    dir: BorrowedFd<'_>,
    name: &[u8],
    key: &[u8],
    buf: &mut [u8],
) -> io::Result<usize> {
    match linux_at::getxattrat(dir, name, nofollow(name), key, buf) {
        Err(e) if no_such_call(&e) => {}
        r => return r,
    }
    if !procfs_usable() {
        return Err(unavailable("getxattrat", "6.13"));
    }
    let path = proc_fd_path(dir, name);
    // rustix answers an empty buffer with 0, not the size: its size query is another call.
    if buf.is_empty() {
        rfs::lgetxattr_query(path, key)
    } else {
        rfs::lgetxattr(path, key, buf)
    }
    .map_err(errno)
}

/// `llistxattr` of `name` in `dir` into `buf` (empty: the list's size only).
fn llistxattr_at(dir: BorrowedFd<'_>, name: &[u8], buf: &mut [u8]) -> io::Result<usize> {
    match linux_at::listxattrat(dir, name, nofollow(name), buf) {
        Err(e) if no_such_call(&e) => {}
        r => return r,
    }
    if !procfs_usable() {
        return Err(unavailable("listxattrat", "6.13"));
    }
    let path = proc_fd_path(dir, name);
    if buf.is_empty() {
        rfs::llistxattr_query(path)
    } else {
        rfs::llistxattr(path, buf)
    }
    .map_err(errno)
}

/// Every xattr name of `name` in `dir` (not following it).
pub(crate) fn llistxattr_all(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Vec<Vec<u8>>> {
    loop {
        let n = llistxattr_at(dir, name, &mut [])?;
        let mut buf = vec![0u8; n];
        match llistxattr_at(dir, name, &mut buf) {
            Ok(k) => {
                buf.truncate(k);
                return Ok(buf
                    .split(|&b| b == 0)
                    .filter(|s| !s.is_empty())
                    .map(<[u8]>::to_vec)
                    .collect());
            }
            // Grown between the two calls.
            Err(e) if is_errno(&e, libc::ERANGE) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The value of the xattr `key` of `name` in `dir` (not following it).
pub(crate) fn lgetxattr_all(dir: BorrowedFd<'_>, name: &[u8], key: &[u8]) -> io::Result<Vec<u8>> {
    loop {
        let n = lgetxattr_at(dir, name, key, &mut [])?;
        let mut buf = vec![0u8; n];
        match lgetxattr_at(dir, name, key, &mut buf) {
            Ok(k) => {
                buf.truncate(k);
                return Ok(buf);
            }
            Err(e) if is_errno(&e, libc::ERANGE) => continue,
            Err(e) => return Err(e),
        }
    }
}
