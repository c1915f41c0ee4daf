//! Safe wrappers over Linux system calls that work on a directory descriptor and a name,
//! which layerdiff's dependencies do not offer yet: `fchmodat2` (Linux 6.6) and
//! `setxattrat`/`getxattrat`/`listxattrat` (Linux 6.13).
//!
//! They let layerdiff chmod a node it holds only an `O_PATH` descriptor of (a FIFO, a device,
//! a hard link), and read or write the xattrs of a name that is not followed if it is a
//! symlink, without going through `/proc/self/fd`. layerdiff's own crate forbids `unsafe`
//! outside its C ABI, so the `syscall(2)` calls live here, each over arguments borrowed for
//! the call only.
//!
//! Every call reports `ENOSYS` (as an `io::Error`) where the kernel lacks it, and on
//! architectures whose numbers this crate does not know; the caller decides what to fall
//! back to. A name or path holding a NUL byte is `EINVAL`, as in std and rustix.

#![deny(unsafe_op_in_unsafe_fn)]

use std::ffi::{c_int, c_long, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Flags of the `*at` lookups (the subset these calls take).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AtFlags(c_int);

impl AtFlags {
    pub const NONE: AtFlags = AtFlags(0);
    /// Do not follow the path's last component if it is a symlink.
    pub const SYMLINK_NOFOLLOW: AtFlags = AtFlags(libc::AT_SYMLINK_NOFOLLOW);
    /// With an empty path: act on the descriptor itself (which may be an `O_PATH` one for
    /// [`fchmodat2`]).
    pub const EMPTY_PATH: AtFlags = AtFlags(libc::AT_EMPTY_PATH);

    pub const fn union(self, other: AtFlags) -> AtFlags {
        AtFlags(self.0 | other.0)
    }
}

/// `setxattr(2)`'s flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct XattrFlags(u32);

impl XattrFlags {
    pub const NONE: XattrFlags = XattrFlags(0);
    /// Fail with `EEXIST` if the xattr exists.
    pub const CREATE: XattrFlags = XattrFlags(libc::XATTR_CREATE as u32);
}

/// The system call numbers. Calls added since Linux 5.1 have one number on every
/// architecture but alpha, ia64 and mips (offset there) and x32 (its bit set); those get none
/// here, so the calls report `ENOSYS`.
mod nr {
    use std::ffi::c_long;

    const UNIFIED: bool = cfg!(all(
        target_os = "linux",
        any(
            all(target_arch = "x86_64", target_pointer_width = "64"),
            target_arch = "x86",
            target_arch = "aarch64",
            target_arch = "arm",
            target_arch = "riscv64",
            target_arch = "riscv32",
            target_arch = "loongarch64",
            target_arch = "s390x",
            target_arch = "powerpc",
            target_arch = "powerpc64",
        )
    ));

    const fn unified(n: c_long) -> Option<c_long> {
        if UNIFIED {
            Some(n)
        } else {
            None
        }
    }

    pub const FCHMODAT2: Option<c_long> = unified(452);
    pub const SETXATTRAT: Option<c_long> = unified(463);
    pub const GETXATTRAT: Option<c_long> = unified(464);
    pub const LISTXATTRAT: Option<c_long> = unified(465);
}

/// The kernel's `struct xattr_args` (include/uapi/linux/xattr.h), version 0.
#[repr(C)]
struct XattrArgs {
    value: u64,
    size: u32,
    flags: u32,
}

const XATTR_ARGS_SIZE_VER0: usize = 16;
const _: () = assert!(std::mem::size_of::<XattrArgs>() == XATTR_ARGS_SIZE_VER0);

fn c_string(s: &[u8]) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn enosys() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOSYS)
}

/// The result of a `syscall(2)` that returns a count or -1 with errno.
fn check(r: c_long) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// `fchmodat2(dir, path, mode, flags)`: change the mode of `path` in `dir`, or with
/// [`AtFlags::EMPTY_PATH`] and an empty path of `dir` itself (an `O_PATH` descriptor is
/// enough). With [`AtFlags::SYMLINK_NOFOLLOW`] a symlink is not followed (and its mode cannot
/// change: `EOPNOTSUPP`).
pub fn fchmodat2(dir: BorrowedFd<'_>, path: &[u8], mode: u32, flags: AtFlags) -> io::Result<()> {
    let nr = nr::FCHMODAT2.ok_or_else(enosys)?;
    let path = c_string(path)?;
    // SAFETY: fchmodat2(int dfd, const char *filename, umode_t mode, unsigned int flags);
    // `path` is a NUL-terminated string that outlives the call, `dir` an open descriptor.
    let r = unsafe {
        libc::syscall(
            nr,
            dir.as_raw_fd() as c_long,
            path.as_ptr(),
            mode as c_long,
            flags.0 as c_long,
        )
    };
    check(r).map(drop)
}

/// `setxattrat(dir, path, flags, name, value)`: set the xattr `name` of `path` in `dir`.
pub fn setxattrat(
    dir: BorrowedFd<'_>,
    path: &[u8],
    flags: AtFlags,
    name: &[u8],
    value: &[u8],
    xflags: XattrFlags,
) -> io::Result<()> {
    let nr = nr::SETXATTRAT.ok_or_else(enosys)?;
    let (path, name) = (c_string(path)?, c_string(name)?);
    let size = u32::try_from(value.len()).map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?;
    let args = XattrArgs {
        value: value.as_ptr() as usize as u64,
        size,
        flags: xflags.0,
    };
    // SAFETY: setxattrat(int dfd, const char *pathname, unsigned int at_flags,
    // const char *name, struct xattr_args *uargs, size_t usize); the strings are
    // NUL-terminated, `args` and the value it points to (read only, `size` bytes) outlive the
    // call.
    let r = unsafe {
        libc::syscall(
            nr,
            dir.as_raw_fd() as c_long,
            path.as_ptr(),
            flags.0 as c_long,
            name.as_ptr(),
            &args as *const XattrArgs,
            XATTR_ARGS_SIZE_VER0,
        )
    };
    check(r).map(drop)
}

/// `getxattrat(dir, path, flags, name)`: read the xattr `name` of `path` in `dir` into `buf`,
/// returning its length; with an empty `buf`, only its length (`ERANGE` if `buf` is too
/// small).
pub fn getxattrat(
    dir: BorrowedFd<'_>,
    path: &[u8],
    flags: AtFlags,
    name: &[u8],
    buf: &mut [u8],
) -> io::Result<usize> {
    let nr = nr::GETXATTRAT.ok_or_else(enosys)?;
    let (path, name) = (c_string(path)?, c_string(name)?);
    let args = XattrArgs {
        value: buf.as_mut_ptr() as usize as u64,
        // An xattr value is at most 64 KiB: a bigger buffer is no more use.
        size: u32::try_from(buf.len()).unwrap_or(u32::MAX),
        flags: 0,
    };
    // SAFETY: getxattrat(int dfd, const char *pathname, unsigned int at_flags,
    // const char *name, struct xattr_args *uargs, size_t usize); the strings are
    // NUL-terminated, `args` outlives the call and points to `buf`, writable for `size` bytes
    // and borrowed mutably for the call.
    let r = unsafe {
        libc::syscall(
            nr,
            dir.as_raw_fd() as c_long,
            path.as_ptr(),
            flags.0 as c_long,
            name.as_ptr(),
            &args as *const XattrArgs,
            XATTR_ARGS_SIZE_VER0,
        )
    };
    check(r)
}

/// `listxattrat(dir, path, flags)`: the NUL-separated names of the xattrs of `path` in `dir`
/// into `buf`, returning their length; with an empty `buf`, only the length needed (`ERANGE`
/// if `buf` is too small).
pub fn listxattrat(
    dir: BorrowedFd<'_>,
    path: &[u8],
    flags: AtFlags,
    buf: &mut [u8],
) -> io::Result<usize> {
    let nr = nr::LISTXATTRAT.ok_or_else(enosys)?;
    let path = c_string(path)?;
    // SAFETY: listxattrat(int dfd, const char *pathname, unsigned int at_flags, char *list,
    // size_t size); `path` is NUL-terminated, `buf` writable for its length and borrowed
    // mutably for the call.
    let r = unsafe {
        libc::syscall(
            nr,
            dir.as_raw_fd() as c_long,
            path.as_ptr(),
            flags.0 as c_long,
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    check(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::fd::AsFd;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

    fn scratch(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("linux-at-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir(&d).unwrap();
        d
    }

    /// Whether the kernel has the call; says so loudly when it does not (never a silent pass).
    fn have(r: &io::Result<impl Sized>, call: &str) -> bool {
        if r.as_ref().err().and_then(io::Error::raw_os_error) == Some(libc::ENOSYS) {
            eprintln!("SKIP: the kernel has no {call}");
            return false;
        }
        true
    }

    #[test]
    fn fchmodat2_changes_an_o_path_descriptor_and_never_a_symlink() {
        let d = scratch("chmod");
        fs::write(d.join("f"), b"").unwrap();
        std::os::unix::fs::symlink("f", d.join("l")).unwrap();
        let f = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH)
            .open(d.join("f"))
            .unwrap();
        let r = fchmodat2(f.as_fd(), b"", 0o604, AtFlags::EMPTY_PATH);
        if have(&r, "fchmodat2") {
            r.unwrap();
            let mode = fs::metadata(d.join("f")).unwrap().permissions().mode();
            assert_eq!(mode & 0o7777, 0o604);
            let dir = fs::File::open(&d).unwrap();
            let e = fchmodat2(dir.as_fd(), b"l", 0o600, AtFlags::SYMLINK_NOFOLLOW).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EOPNOTSUPP));
            assert_eq!(
                fs::metadata(d.join("f")).unwrap().permissions().mode() & 0o7777,
                0o604
            );
        }
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn xattrat_calls_act_on_the_name_not_a_symlink_target() {
        let d = scratch("xattr");
        fs::write(d.join("f"), b"").unwrap();
        std::os::unix::fs::symlink("f", d.join("l")).unwrap();
        let dir = fs::File::open(&d).unwrap();
        let dir = dir.as_fd();
        let nofollow = AtFlags::SYMLINK_NOFOLLOW;
        let r = setxattrat(dir, b"f", nofollow, b"user.k", b"value", XattrFlags::CREATE);
        if have(&r, "setxattrat") {
            if r.as_ref().err().and_then(io::Error::raw_os_error) == Some(libc::EOPNOTSUPP) {
                eprintln!("SKIP: {} has no user xattrs", d.display());
                return;
            }
            r.unwrap();
            let again = setxattrat(dir, b"f", nofollow, b"user.k", b"v", XattrFlags::CREATE);
            assert_eq!(again.unwrap_err().raw_os_error(), Some(libc::EEXIST));
            assert_eq!(
                getxattrat(dir, b"f", nofollow, b"user.k", &mut []).unwrap(),
                5
            );
            let mut buf = [0u8; 16];
            let n = getxattrat(dir, b"f", nofollow, b"user.k", &mut buf).unwrap();
            assert_eq!(&buf[..n], b"value");
            let small = getxattrat(dir, b"f", nofollow, b"user.k", &mut buf[..2]);
            assert_eq!(small.unwrap_err().raw_os_error(), Some(libc::ERANGE));
            // Through the symlink without following it: the link's own (none), not f's.
            let via_link = getxattrat(dir, b"l", nofollow, b"user.k", &mut buf);
            assert_eq!(via_link.unwrap_err().raw_os_error(), Some(libc::ENODATA));
            let n = getxattrat(dir, b"l", AtFlags::NONE, b"user.k", &mut buf).unwrap();
            assert_eq!(&buf[..n], b"value");
            let n = listxattrat(dir, b"f", nofollow, &mut buf).unwrap();
            assert!(
                buf[..n].split(|&b| b == 0).any(|k| k == b"user.k"),
                "{:?}",
                &buf[..n]
            );
            assert!(listxattrat(dir, b"f", nofollow, &mut []).unwrap() >= n);
            let nul = setxattrat(dir, b"f\0x", nofollow, b"user.k", b"", XattrFlags::NONE);
            assert_eq!(nul.unwrap_err().raw_os_error(), Some(libc::EINVAL));
        }
        fs::remove_dir_all(&d).unwrap();
    }
}
