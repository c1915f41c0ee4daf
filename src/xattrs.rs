//! The xattrs an all-xattrs compare carries: every one the kernel lets us list and read,
//! except overlayfs's own metadata, which belongs to the upperdir, not to the layer.

use std::path::Path;

use crate::error::{Error, Result};

/// Prefixes of overlayfs's metadata (whiteouts, opaque directories, redirects, origins): never
/// carried by compare, never set by apply.
pub(crate) const OVERLAY_XATTR_PREFIXES: [&[u8]; 2] = [b"trusted.overlay.", b"user.overlay."];

/// Whether `name` is overlayfs metadata.
pub(crate) fn is_overlay_xattr(name: &[u8]) -> bool {
    OVERLAY_XATTR_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Every xattr of `path` (not following a symlink) but overlay's, as (name, value) in the
/// kernel's listing order (the encoder sorts them as Go's writer does). A filesystem without
/// xattrs has none; one that vanished between list and get is skipped.
pub(crate) fn carried_xattrs(path: &Path) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    use std::os::unix::ffi::OsStrExt;
    let names = match xattr::list(path) {
        Ok(names) => names,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(Error::path("list xattrs of", path, e)),
    };
    let mut out = Vec::new();
    for name in names {
        let name = name.as_bytes();
        if is_overlay_xattr(name) {
            continue;
        }
        let value = match xattr::get(path, std::ffi::OsStr::from_bytes(name)) {
            Ok(Some(v)) => v,
            Ok(None) => continue,
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => continue,
            Err(e) => {
                return Err(Error::path_detail(
                    "get xattr of",
                    path,
                    format!("(key {})", String::from_utf8_lossy(name)),
                    e,
                ))
            }
        };
        out.push((name.to_vec(), value));
    }
    Ok(out)
}
