//! Tests that need root (mknod, chown, trusted.* xattrs, mounts).

/// Fail loudly (not silently pass) when not root.
pub fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "apply tests must run as root (mknod, chown, trusted.* xattrs)"
    );
}
