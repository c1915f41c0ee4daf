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

/// The result of the fd-relative call `at`; where the kernel (or a seccomp filter) has no
/// such call, `by_proc` through `/proc/self/fd` if /proc is procfs; else an error naming
/// `call` and the Linux release that has it.
fn at_or_proc<T>(
    at: io::Result<T>,
    call: &str,
    since: &str,
    by_proc: impl FnOnce() -> rustix::io::Result<T>,
) -> io::Result<T> {
    match at {
        Err(e) if no_such_call(&e) => {}
        r => return r,
    }
    if !procfs_usable() {
        return Err(unavailable(call, since));
    }
    by_proc().map_err(errno)
}

/// Set the mode of the node `fd` (an `O_PATH` descriptor of it, not of a symlink).
pub(crate) fn chmod_path_fd(fd: BorrowedFd<'_>, mode: Mode) -> io::Result<()> {
    let at = linux_at::fchmodat2(fd, b"", mode.as_raw_mode(), AtFlags::EMPTY_PATH);
    at_or_proc(at, "fchmodat2", "6.6", || {
        rfs::chmod(proc_fd_path(fd, b""), mode)
    })
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
    let at = linux_at::setxattrat(dir, name, nofollow(name), key, value, xflags);
    at_or_proc(at, "setxattrat", "6.13", || {
        rfs::lsetxattr(proc_fd_path(dir, name), key, value, rflags)
    })
}

/// `lgetxattr` of `name` in `dir` into `buf` (empty: the value's size only).
pub(crate) fn lgetxattr_at(
    dir: BorrowedFd<'_>,
    name: &[u8],
    key: &[u8],
    buf: &mut [u8],
) -> io::Result<usize> {
    let at = linux_at::getxattrat(dir, name, nofollow(name), key, &mut *buf);
    at_or_proc(at, "getxattrat", "6.13", || {
        let path = proc_fd_path(dir, name);
        // rustix answers an empty buffer with 0, not the size: its size query is another call.
        if buf.is_empty() {
            rfs::lgetxattr_query(path, key)
        } else {
            rfs::lgetxattr(path, key, buf)
        }
    })
}

/// `llistxattr` of `name` in `dir` into `buf` (empty: the list's size only).
fn llistxattr_at(dir: BorrowedFd<'_>, name: &[u8], buf: &mut [u8]) -> io::Result<usize> {
    let at = linux_at::listxattrat(dir, name, nofollow(name), &mut *buf);
    at_or_proc(at, "listxattrat", "6.13", || {
        let path = proc_fd_path(dir, name);
        if buf.is_empty() {
            rfs::llistxattr_query(path)
        } else {
            rfs::llistxattr(path, buf)
        }
    })
}

/// Every xattr name of `name` in `dir` (not following it).
pub(crate) fn llistxattr_all(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Vec<Vec<u8>>> {
    let list = read_sized(|buf| llistxattr_at(dir, name, buf))?;
    Ok(list
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(<[u8]>::to_vec)
        .collect())
}

/// The value of the xattr `key` of `name` in `dir` (not following it).
pub(crate) fn lgetxattr_all(dir: BorrowedFd<'_>, name: &[u8], key: &[u8]) -> io::Result<Vec<u8>> {
    read_sized(|buf| lgetxattr_at(dir, name, key, buf))
}

/// What `call` writes (a list or value; an empty buffer asks only for its size): first into a
/// 4 KiB buffer on the stack, which holds nearly every list and value, so one system call per
/// entry (compare reads these for every entry); else at the size the kernel reports, again if
/// it grew in between.
fn read_sized(mut call: impl FnMut(&mut [u8]) -> io::Result<usize>) -> io::Result<Vec<u8>> {
    let mut first = [0u8; 4096];
    match call(&mut first) {
        Ok(n) => return Ok(first[..n].to_vec()),
        Err(e) if is_errno(&e, libc::ERANGE) => {}
        Err(e) => return Err(e),
    }
    loop {
        let mut buf = vec![0u8; call(&mut [])?];
        match call(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(e) if is_errno(&e, libc::ERANGE) => continue,
            Err(e) => return Err(e),
        }
    }
}
