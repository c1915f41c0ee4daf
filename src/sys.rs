//! Small system-call helpers shared by the resolver and apply.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// A rustix error as the `io::Error` the rest of the crate carries.
pub(crate) fn errno(e: rustix::io::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

pub(crate) fn is_errno(e: &io::Error, n: i32) -> bool {
    e.raw_os_error() == Some(n)
}

/// `/proc/self/fd/N[/name]`: reaches `name` in the directory `dir` for the calls that have no
/// `*at` form (lsetxattr, llistxattr, chmod of an `O_PATH` descriptor).
pub(crate) fn proc_fd_path(dir: BorrowedFd<'_>, name: &[u8]) -> Vec<u8> {
    let mut p = format!("/proc/self/fd/{}", dir.as_raw_fd()).into_bytes();
    if !name.is_empty() {
        p.push(b'/');
        p.extend_from_slice(name);
    }
    p
}
