//! Change detection between two trees by walking both (continuity's `fs.Changes` double walk,
//! docs/containerd.md §1).
//!
//! Each tree is walked pre-order with lstat and bytewise-sorted names; the two walks are merged
//! in path order where `/` sorts as byte 0. Memory holds one sorted listing per open directory.

use std::ffi::OsString;
use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::control::CancelToken;
use crate::error::{Error, Result};

/// What happened to a path between lower and upper (continuity's `ChangeKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// Unchanged, reported only for non-directories with more than one link.
    Unmodified,
    Add,
    Modify,
    Delete,
}

/// One path seen by a walk: `/`-rooted relative path, full path, lstat.
pub struct WalkEntry {
    pub path: Vec<u8>,
    pub full: PathBuf,
    pub meta: Metadata,
}

struct DirFrame {
    rel: Vec<u8>,
    full: PathBuf,
    names: std::vec::IntoIter<OsString>,
}

/// A pre-order walk of one tree (root excluded), like Go's `filepath.Walk`.
pub struct Walker {
    stack: Vec<DirFrame>,
    /// A directory just yielded, to be listed before the next entry.
    pending_dir: Option<(Vec<u8>, PathBuf)>,
}

impl Walker {
    /// Start walking `root`, which must be a directory.
    pub fn new(root: &Path) -> Result<Self> {
        let meta = fs::symlink_metadata(root).map_err(|e| Error::path("lstat", root, e))?;
        if !meta.is_dir() {
            return Err(Error::path(
                "walk",
                root,
                io::Error::new(io::ErrorKind::InvalidInput, "not a directory"),
            ));
        }
        Ok(Walker {
            stack: Vec::new(),
            pending_dir: Some((Vec::new(), root.to_path_buf())),
        })
    }

    fn open_dir(&mut self, rel: Vec<u8>, full: PathBuf) -> Result<()> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&full).map_err(|e| Error::path("read directory", &full, e))? {
            let entry = entry.map_err(|e| Error::path("read directory", &full, e))?;
            names.push(entry.file_name());
        }
        names.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        self.stack.push(DirFrame {
            rel,
            full,
            names: names.into_iter(),
        });
        Ok(())
    }

    /// The next entry, or `None` at the end.
    pub fn next_entry(&mut self) -> Result<Option<WalkEntry>> {
        if let Some((rel, full)) = self.pending_dir.take() {
            self.open_dir(rel, full)?;
        }
        loop {
            let Some(top) = self.stack.last_mut() else {
                return Ok(None);
            };
            let Some(name) = top.names.next() else {
                self.stack.pop();
                continue;
            };
            let full = top.full.join(&name);
            let mut path = Vec::with_capacity(top.rel.len() + 1 + name.len());
            path.extend_from_slice(&top.rel);
            path.push(b'/');
            path.extend_from_slice(name.as_bytes());
            let meta = fs::symlink_metadata(&full).map_err(|e| Error::path("lstat", &full, e))?;
            if meta.is_dir() {
                self.pending_dir = Some((path.clone(), full.clone()));
            }
            return Ok(Some(WalkEntry { path, full, meta }));
        }
    }
}

/// continuity's `directoryCompare`: bytewise with `/` as byte 0, a prefix first.
pub fn directory_compare(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    let map = |c: u8| if c == b'/' { 0 } else { c };
    a.iter().map(|&c| map(c)).cmp(b.iter().map(|&c| map(c)))
}

/// The `security.capability` xattr of `path` (not following symlinks); missing or
/// unsupported is empty, as in containerd.
pub fn capability(path: &Path) -> Result<Option<Vec<u8>>> {
    match xattr::get(path, "security.capability") {
        Ok(v) => Ok(v.filter(|v| !v.is_empty())),
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ENODATA) => Ok(None),
        Err(e) => Err(Error::path("get security.capability xattr of", path, e)),
    }
}

fn is_linked(meta: &Metadata) -> bool {
    !meta.is_dir() && meta.nlink() > 1
}

/// continuity's `sameFile`.
fn same_file(lower: &WalkEntry, upper: &WalkEntry, cancel: Option<&CancelToken>) -> Result<bool> {
    let (m1, m2) = (&lower.meta, &upper.meta);
    if m1.dev() == m2.dev() && m1.ino() == m2.ino() {
        return Ok(true);
    }
    if m1.mode() != m2.mode()
        || m1.uid() != m2.uid()
        || m1.gid() != m2.gid()
        || m1.rdev() != m2.rdev()
    {
        return Ok(false);
    }
    if capability(&lower.full)? != capability(&upper.full)? {
        return Ok(false);
    }
    if !m1.is_dir() {
        if m1.size() != m2.size() || m1.mtime() != m2.mtime() {
            return Ok(false);
        }
        let (n1, n2) = (m1.mtime_nsec(), m2.mtime_nsec());
        if n1 == 0 && n2 == 0 {
            if m1.file_type().is_symlink() {
                let t1 = fs::read_link(&lower.full)
                    .map_err(|e| Error::path("readlink", &lower.full, e))?;
                let t2 = fs::read_link(&upper.full)
                    .map_err(|e| Error::path("readlink", &upper.full, e))?;
                return Ok(t1 == t2);
            }
            if m1.size() == 0 {
                return Ok(true);
            }
            return same_content(&lower.full, &upper.full, cancel);
        } else if n1 != n2 {
            return Ok(false);
        }
    }
    Ok(true)
}

fn read_full(f: &mut File, buf: &mut [u8], path: &Path) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::path("read", path, e)),
        }
    }
    Ok(n)
}

fn same_content(p1: &Path, p2: &Path, cancel: Option<&CancelToken>) -> Result<bool> {
    let mut f1 = File::open(p1).map_err(|e| Error::path("open", p1, e))?;
    let mut f2 = File::open(p2).map_err(|e| Error::path("open", p2, e))?;
    let mut b1 = vec![0u8; 64 * 1024];
    let mut b2 = vec![0u8; 64 * 1024];
    loop {
        crate::control::check(cancel)?;
        let n1 = read_full(&mut f1, &mut b1, p1)?;
        let n2 = read_full(&mut f2, &mut b2, p2)?;
        if n1 != n2 || b1[..n1] != b2[..n2] {
            return Ok(false);
        }
        if n1 < b1.len() {
            return Ok(true);
        }
    }
}

/// Walk `lower` and `upper` and call `f` for every change in continuity's order, with the
/// upper lstat for adds, modifies and unmodified hardlinks.
pub fn changes(
    lower: &Path,
    upper: &Path,
    cancel: Option<&CancelToken>,
    mut f: impl FnMut(ChangeKind, &[u8], Option<&Metadata>) -> Result<()>,
) -> Result<()> {
    // An empty lower path is no lower (continuity's single-walk `addDirChanges`): every
    // upper entry is an add.
    let mut w1 = match lower.as_os_str().is_empty() {
        true => None,
        false => Some(Walker::new(lower)?),
    };
    let mut w2 = Some(Walker::new(upper)?);
    let (mut e1, mut e2): (Option<WalkEntry>, Option<WalkEntry>) = (None, None);
    // A deleted directory (or one that became a non-directory), `path/`: deletes under it are
    // implied.
    let mut rmdir: Vec<u8> = Vec::new();
    loop {
        crate::control::check(cancel)?;
        if e1.is_none() {
            if let Some(w) = w1.as_mut() {
                e1 = w.next_entry()?;
                if e1.is_none() {
                    w1 = None;
                }
            }
        }
        if e2.is_none() {
            if let Some(w) = w2.as_mut() {
                e2 = w.next_entry()?;
                if e2.is_none() {
                    w2 = None;
                }
            }
        }
        let order = match (&e1, &e2) {
            (None, None) => return Ok(()),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(a), Some(b)) => directory_compare(&a.path, &b.path),
        };
        match order {
            std::cmp::Ordering::Greater => {
                rmdir.clear();
                let added = e2.take().expect("upper entry");
                f(ChangeKind::Add, &added.path, Some(&added.meta))?;
            }
            std::cmp::Ordering::Less => {
                let deleted = e1.take().expect("lower entry");
                if !rmdir.is_empty() && deleted.path.starts_with(&rmdir) {
                    continue;
                } else if deleted.meta.is_dir() {
                    rmdir = [&deleted.path[..], b"/"].concat();
                } else {
                    rmdir.clear();
                }
                f(ChangeKind::Delete, &deleted.path, None)?;
            }
            std::cmp::Ordering::Equal => {
                let (l, u) = (
                    e1.take().expect("lower entry"),
                    e2.take().expect("upper entry"),
                );
                let same = same_file(&l, &u, cancel)?;
                if l.meta.is_dir() && !u.meta.is_dir() {
                    rmdir = [&l.path[..], b"/"].concat();
                } else {
                    rmdir.clear();
                }
                let kind = if same {
                    if !is_linked(&u.meta) {
                        continue;
                    }
                    ChangeKind::Unmodified
                } else {
                    ChangeKind::Modify
                };
                f(kind, &u.path, Some(&u.meta))?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering;

    #[test]
    fn slash_sorts_before_every_other_byte() {
        assert_eq!(directory_compare(b"/a/b", b"/a b"), Ordering::Less);
        assert_eq!(directory_compare(b"/a", b"/a/b"), Ordering::Less);
        assert_eq!(directory_compare(b"/a/b", b"/a"), Ordering::Greater);
        assert_eq!(directory_compare(b"/a/\x01", b"/a\x01"), Ordering::Less);
        assert_eq!(directory_compare(b"/a", b"/a"), Ordering::Equal);
    }
}
