//! The xattrs an all-xattrs compare carries: every one the kernel lets us list and read,
//! except overlayfs's own metadata, which belongs to the upperdir, not to the layer.

use std::os::unix::ffi::{OsStrExt, OsStringExt};

use crate::walk::At;

use crate::error::Result;

/// Prefixes of overlayfs's metadata (whiteouts, opaque directories, redirects, origins): never
/// carried by compare, never set by apply.
pub(crate) const OVERLAY_XATTR_PREFIXES: [&[u8]; 2] = [b"trusted.overlay.", b"user.overlay."];

/// Whether `name` is overlayfs metadata.
pub(crate) fn is_overlay_xattr(name: &[u8]) -> bool {
    OVERLAY_XATTR_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Every xattr of the entry at `at` (not following a symlink) but overlay's, as (name, value)
/// in the kernel's listing order (the encoder sorts them as Go's writer does). A filesystem
/// without xattrs has none; one that vanished between list and get is skipped.
pub(crate) fn carried_xattrs(at: &At<'_>) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    for name in at.xattr_names()? {
        if is_overlay_xattr(name.as_bytes()) {
            continue;
        }
        if let Some(value) = at.xattr(&name)? {
            out.push((name.into_vec(), value));
        }
    }
    Ok(out)
}
