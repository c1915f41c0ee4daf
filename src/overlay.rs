//! Change detection from an overlayfs upperdir (issue 11): walk only the upperdir, look up the
//! lower view only for the paths found there, and yield the same changes, in the same order, as
//! the double walk ([`crate::walk::changes`]) of (lower view, merged view) would, so the same
//! change writer writes the same bytes.
//!
//! How the upperdir maps to the merged view (Documentation/filesystems/overlayfs.rst):
//! - a 0/0 character device, or a zero-size file with `overlay.whiteout` in a directory marked
//!   `overlay.opaque=x`, is a whiteout: the name is gone from the merged view;
//! - a directory with `overlay.opaque=y` hides the lower directory: every lower child that is
//!   not in the upper is gone, and so are the lower contents of every directory below it;
//! - every other upper entry is what the merged view shows (same mode, owners, size, times,
//!   capability); lower entries that are not shadowed are unchanged, so they cause no change.
//!
//! What the merged view cannot be told from the upperdir alone (`overlay.redirect`,
//! `overlay.metacopy`, an upperdir used with `index=on` (marked by an origin on its root: the
//! index keeps lower hardlinks together), a hardlinked copy-up of a special file, or of any file
//! with `userxattr` (whose names the kernel numbers differently in the merged view), and unknown `overlay.*` xattrs) is refused as
//! [`Error::NotImplemented`] ("not representable"), so the caller can fall back to the double
//! walk; never a different layer.

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::FileType;

use crate::compare::{write_layer, CompareOptions, Diff};
use crate::control::CancelToken;
use crate::error::{Error, Result};
use crate::overlay_forms::{OverlayXattrs, OPAQUE_HAS_XATTR_WHITEOUTS, OPAQUE_YES};
use crate::walk::{self, At, Change, ChangeKind, Meta};

/// The error for an upperdir whose merged view cannot be derived exactly.
fn not_representable(path: &Path, why: &str) -> Error {
    Error::NotImplemented(format!(
        "upperdir change not representable without the merged view: {}: {why}",
        path.display()
    ))
}

/// What an upperdir entry's overlay xattrs say about it.
#[derive(Default)]
struct OverlayMarks {
    /// `overlay.opaque=y`: the lower directory is hidden.
    opaque: bool,
    /// `overlay.opaque=x`: the directory may hold xattr whiteouts.
    xwhiteouts: bool,
    /// `overlay.whiteout`: an xattr whiteout (if its directory is marked `x`).
    whiteout: bool,
    /// `overlay.origin`: copied up from a lower inode.
    origin: bool,
}

fn overlay_marks(at: &At, ns: OverlayXattrs, is_root: bool) -> Result<OverlayMarks> {
    let mut marks = OverlayMarks::default();
    for name in at.xattr_names()? {
        let name = std::os::unix::ffi::OsStrExt::as_bytes(name.as_os_str());
        if name.starts_with(ns.other_prefix()) {
            return Err(not_representable(
                &at.display(),
                "overlay xattrs of the other namespace (is userxattr set right?)",
            ));
        }
        let Some(key) = name.strip_prefix(ns.prefix()) else {
            continue;
        };
        match key {
            b"opaque" => match at.xattr(ns.opaque_xattr())?.as_deref() {
                Some(OPAQUE_YES) => marks.opaque = true,
                Some(OPAQUE_HAS_XATTR_WHITEOUTS) => marks.xwhiteouts = true,
                _ => return Err(not_representable(&at.display(), "unknown overlay.opaque")),
            },
            b"whiteout" => marks.whiteout = true,
            b"origin" => marks.origin = true,
            // Set on directories holding copied-up entries; says nothing about the merged view.
            b"impure" => {}
            b"uuid" if is_root => {}
            b"redirect" => return Err(not_representable(&at.display(), "overlay.redirect")),
            b"metacopy" => return Err(not_representable(&at.display(), "overlay.metacopy")),
            other => {
                return Err(not_representable(
                    &at.display(),
                    &format!("overlay.{}", String::from_utf8_lossy(other)),
                ))
            }
        }
    }
    Ok(marks)
}

/// One directory level of the walk. Only the last [`walk::MAX_OPEN_DIRS`] levels keep their
/// descriptors open (issue 10: a deep chain made by the container must not exhaust
/// `RLIMIT_NOFILE`); the walk reopens a closed level through `..` of its child when it returns.
struct Frame {
    rel: Vec<u8>,
    /// `None` while closed.
    upper: Option<OwnedFd>,
    upper_meta: Meta,
    /// The lower view's directory at `rel`, if it has one (what `lower` reopens to).
    lower_meta: Option<Meta>,
    /// `None` while closed or when there is no lower directory. The deepest level with a lower
    /// directory keeps it open even while closed: the levels below it have none to reopen it
    /// through `..`, and levels with a lower directory are a prefix of the stack, so that is
    /// one descriptor.
    lower: Option<OwnedFd>,
    /// The merged view shows none of the lower directory's children that the upper lacks
    /// (this directory or an ancestor is opaque).
    hides_lower: bool,
    xwhiteouts: bool,
    /// The merged listing: name, and whether the upper has it.
    names: std::vec::IntoIter<(Vec<u8>, bool)>,
}

/// Sorted union of the upper names and (when the lower is hidden) the lower names.
fn merged_names(upper: Vec<Vec<u8>>, lower: Vec<Vec<u8>>) -> Vec<(Vec<u8>, bool)> {
    let mut out = Vec::with_capacity(upper.len() + lower.len());
    let (mut u, mut l) = (upper.into_iter().peekable(), lower.into_iter().peekable());
    loop {
        let take_upper = match (u.peek(), l.peek()) {
            (None, None) => return out,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(a), Some(b)) => match a.cmp(b) {
                std::cmp::Ordering::Less => true,
                std::cmp::Ordering::Greater => false,
                std::cmp::Ordering::Equal => {
                    l.next();
                    true
                }
            },
        };
        if take_upper {
            out.push((u.next().expect("peeked"), true));
        } else {
            out.push((l.next().expect("peeked"), false));
        }
    }
}

/// Write to `out` the layer that turns `lower` (the overlay mount's lower layers as one
/// directory, e.g. a read-only mount of them) into the merged view of `lower` and `upperdir`,
/// reading only the upperdir and the lower paths it names. The bytes are those [`crate::compare`]
/// of (lower, merged view) writes. An upperdir whose merged view cannot be derived exactly is
/// an [`Error::NotImplemented`] naming the path and why ("not representable"): compare the
/// mounted views instead.
///
/// The upperdir must not change during the call (the kernel calls changing it under a mounted
/// overlay undefined); changes that the checks see are errors, as in [`crate::compare`].
pub fn compare_upperdir<W: Write + Send>(
    lower: &Path,
    upperdir: &Path,
    xattrs: OverlayXattrs,
    out: W,
    opts: &CompareOptions,
) -> Result<Diff> {
    write_layer(upperdir, out, opts, |handle| {
        changes(lower, upperdir, xattrs, opts.cancel.as_ref(), handle)
    })
}

/// Walk `upperdir` against `lower` (the overlay's lower layers as one directory) and call `f`
/// for every change the double walk of (lower, merged view) would report that can affect the
/// layer, in its order.
pub(crate) fn changes(
    lower: &Path,
    upperdir: &Path,
    ns: OverlayXattrs,
    cancel: Option<&CancelToken>,
    mut f: impl FnMut(Change) -> Result<()>,
) -> Result<()> {
    let (lower_fd, lower_root_meta) = walk::open_root(lower)?;
    let (upper_fd, upper_root_meta) = walk::open_root(upperdir)?;
    let mut stack: Vec<Frame> = Vec::new();
    let root_marks = {
        // `.` in the root's own descriptor: the root itself.
        let at = At {
            dir: upper_fd.as_fd(),
            name: b".",
            root: upperdir,
            rel: b"",
        };
        overlay_marks(&at, ns, true)?
    };
    if root_marks.origin {
        // index=on binds the upperdir to its lower by an origin on the root; the index then
        // keeps lower hardlinks together, so a lower name that is not in the upperdir may show
        // copied-up contents.
        return Err(not_representable(
            upperdir,
            "index=on (overlay.origin on the upperdir root): the index is not followed",
        ));
    }
    push_frame(
        &mut stack,
        Vec::new(),
        (upper_fd, upper_root_meta),
        Some((lower_fd, lower_root_meta)),
        root_marks.opaque,
        root_marks.xwhiteouts,
        upperdir,
        lower,
    )?;
    while let Some(top) = stack.last_mut() {
        crate::control::check(cancel)?;
        let Some((name, in_upper)) = top.names.next() else {
            pop_frame(&mut stack, upperdir, lower)?;
            continue;
        };
        let top_upper = top.upper.as_ref().expect("the top frame is open").as_fd();
        let mut path = Vec::with_capacity(top.rel.len() + 1 + name.len());
        path.extend_from_slice(&top.rel);
        path.push(b'/');
        path.extend_from_slice(&name);
        let lower_meta = match top.lower_fd() {
            Some(fd) => lstat_if_exists(fd, &name, lower, &path)?,
            None => None,
        };
        if !in_upper {
            // Listed from a hidden lower directory and not shadowed: gone from the merged view.
            f(deleted(&path))?;
            continue;
        }
        let upper_at = At {
            dir: top_upper,
            name: &name,
            root: upperdir,
            rel: &path,
        };
        let um = walk::lstat_at(top_upper, &name, || upper_at.display())?;
        let is_chr_whiteout = um.file_type() == FileType::CharacterDevice && um.rdev == 0;
        let marks = if is_chr_whiteout {
            OverlayMarks::default()
        } else {
            overlay_marks(&upper_at, ns, false)?
        };
        if marks.whiteout && !(top.xwhiteouts && um.file_type() == FileType::RegularFile) {
            return Err(not_representable(
                &upper_at.display(),
                "overlay.whiteout outside a directory marked overlay.opaque=x",
            ));
        }
        if is_chr_whiteout || marks.whiteout {
            if lower_meta.is_some() {
                f(deleted(&path))?;
            }
            continue;
        }
        let copied_up = marks.origin || lower_meta.is_some();
        if copied_up
            && walk::is_linked(&um)
            && (um.file_type() != FileType::RegularFile || ns == OverlayXattrs::User)
        {
            // The kernel numbers the names of a linked copy-up differently in the merged view
            // (the lower inode where the path has a lower entry) unless it can follow the
            // origin, which it does for regular files with trusted xattrs only (user xattrs
            // cannot be set on special files): only the merged view says what the layer links.
            return Err(not_representable(
                &upper_at.display(),
                "hardlinked copy-up (the merged view numbers its names differently)",
            ));
        }
        let kind = match &lower_meta {
            None => Some(ChangeKind::Add),
            Some(lm) => {
                let lower_at = lower_at(top, &name, lower, &path);
                if walk::same_file((&lower_at, lm), (&upper_at, &um), cancel)? {
                    walk::is_linked(&um).then_some(ChangeKind::Unmodified)
                } else {
                    Some(ChangeKind::Modify)
                }
            }
        };
        if let Some(kind) = kind {
            f(Change {
                kind,
                path: &path,
                upper: Some((upper_at, &um)),
            })?;
        }
        if um.is_dir() {
            let upper_child = (upper_at.open_dir(&um)?, um);
            let lower_child = match lower_meta {
                Some(lm) if lm.is_dir() => {
                    Some((lower_at(top, &name, lower, &path).open_dir(&lm)?, lm))
                }
                _ => None,
            };
            let hides = top.hides_lower || marks.opaque;
            push_frame(
                &mut stack,
                path,
                upper_child,
                lower_child,
                hides,
                marks.xwhiteouts,
                upperdir,
                lower,
            )?;
        }
    }
    Ok(())
}

fn deleted(path: &[u8]) -> Change<'_> {
    Change {
        kind: ChangeKind::Delete,
        path,
        upper: None,
    }
}

/// Where `name` is in the lower view's directory of `frame` (which has one: it was found there).
fn lower_at<'a>(frame: &'a Frame, name: &'a [u8], root: &'a Path, rel: &'a [u8]) -> At<'a> {
    At {
        dir: frame.lower_fd().expect("found in the lower view"),
        name,
        root,
        rel,
    }
}

#[allow(clippy::too_many_arguments)]
fn push_frame(
    stack: &mut Vec<Frame>,
    rel: Vec<u8>,
    (upper, upper_meta): (OwnedFd, Meta),
    lower: Option<(OwnedFd, Meta)>,
    hides_lower: bool,
    xwhiteouts: bool,
    upper_root: &Path,
    lower_root: &Path,
) -> Result<()> {
    let upper_names = walk::list_dir(upper.as_fd(), || walk::display_path(upper_root, &rel))?;
    let lower_names = match (&lower, hides_lower) {
        (Some((fd, _)), true) => {
            walk::list_dir(fd.as_fd(), || walk::display_path(lower_root, &rel))?
        }
        _ => Vec::new(),
    };
    let (lower, lower_meta) = lower.map_or((None, None), |(fd, m)| (Some(fd), Some(m)));
    stack.push(Frame {
        names: merged_names(upper_names, lower_names).into_iter(),
        rel,
        upper: Some(upper),
        upper_meta,
        lower_meta,
        lower,
        hides_lower,
        xwhiteouts,
    });
    if stack.len() > walk::MAX_OPEN_DIRS {
        // Close the level that just left the open window (as walk::Walker::push_dir does),
        // keeping its lower directory if its child has none (see Frame::lower).
        let i = stack.len() - 1 - walk::MAX_OPEN_DIRS;
        let child_has_lower = stack[i + 1].lower_meta.is_some();
        let frame = &mut stack[i];
        frame.upper = None;
        if child_has_lower {
            frame.lower = None;
        }
    }
    Ok(())
}

/// Leave the top frame; reopen its parent's descriptors if they were closed, through `..` of
/// the child's (checked against the parent's stored lstat: a mismatch is "changed during diff").
fn pop_frame(stack: &mut Vec<Frame>, upper_root: &Path, lower_root: &Path) -> Result<()> {
    let child = stack.pop().expect("a frame to leave");
    let Some(parent) = stack.last_mut() else {
        return Ok(());
    };
    if parent.upper.is_none() {
        let child_upper = child.upper.as_ref().expect("the top frame is open");
        parent.upper = Some(walk::reopen_parent(
            child_upper.as_fd(),
            &parent.upper_meta,
            upper_root,
            &parent.rel,
        )?);
    }
    if let (None, Some(meta)) = (&parent.lower, &parent.lower_meta) {
        // Closed with its lower directory: the child has one (else it was kept open).
        let child_lower = child
            .lower
            .as_ref()
            .expect("the child has a lower directory");
        parent.lower = Some(walk::reopen_parent(
            child_lower.as_fd(),
            meta,
            lower_root,
            &parent.rel,
        )?);
    }
    Ok(())
}

impl Frame {
    /// The open frame's lower directory, if it has one.
    fn lower_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        debug_assert_eq!(self.lower.is_some(), self.lower_meta.is_some());
        self.lower.as_ref().map(|fd| fd.as_fd())
    }
}

fn lstat_if_exists(
    dir: std::os::fd::BorrowedFd<'_>,
    name: &[u8],
    root: &Path,
    rel: &[u8],
) -> Result<Option<Meta>> {
    match walk::lstat_at(dir, name, || walk::display_path(root, rel)) {
        Ok(m) => Ok(Some(m)),
        Err(Error::Path { source, .. }) if source.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::merged_names;

    #[test]
    fn merged_listing_is_a_sorted_union_preferring_upper() {
        let v = |s: &[&str]| s.iter().map(|n| n.as_bytes().to_vec()).collect::<Vec<_>>();
        let got = merged_names(v(&["a", "c", "d"]), v(&["b", "c", "e"]));
        let want: Vec<(Vec<u8>, bool)> = [
            ("a", true),
            ("b", false),
            ("c", true),
            ("d", true),
            ("e", false),
        ]
        .iter()
        .map(|(n, u)| (n.as_bytes().to_vec(), *u))
        .collect();
        assert_eq!(got, want);
    }
}
