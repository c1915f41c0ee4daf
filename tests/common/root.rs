//! The one policy for tests that need root (chown, mknod, trusted.* xattrs, mounts): they
//! start with `require_root!()`. As root they run; otherwise they print
//! `SKIP <test>: needs root` to stderr and return, never passing silently. Where root is
//! expected (CI, the project's own machines), `LAYERDIFF_REQUIRE_ROOT=1` turns the skip into a
//! failure.

use std::io::Write;

/// Return from the calling test (after saying so) unless it runs as root.
macro_rules! require_root {
    () => {
        if !$crate::common::root::have_root() {
            return;
        }
    };
}
pub(crate) use require_root;

pub const REQUIRE_ROOT_VAR: &str = "LAYERDIFF_REQUIRE_ROOT";

/// True as root; otherwise reports the skip (or fails, see the module doc).
pub fn have_root() -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    // The test harness names each test's thread after the test.
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("this test");
    if std::env::var_os(REQUIRE_ROOT_VAR).is_some_and(|v| v == "1") {
        panic!("{test}: needs root, and {REQUIRE_ROOT_VAR}=1 forbids skipping it");
    }
    // Straight to stderr: the harness captures `eprintln!` of a passing test, hiding the skip.
    let _ = writeln!(
        std::io::stderr(),
        "SKIP {test}: needs root (chown, mknod, trusted.* xattrs, mounts)"
    );
    false
}
