//! In-root path resolution, fd-based.
//!
//! containerd resolves every layer path with continuity's `fs.RootPath`: a lexical algorithm over
//! path strings that follows symlinks as if the root were `/` (absolute targets and `..` stay
//! inside), keeps missing components literally, and gives up after 255 links. We port that
//! algorithm exactly (its results differ from the kernel's own resolution when link targets hold
//! `..` after a symlink), but every `lstat`/`readlink` it does is made relative to the root's
//! file descriptor with `openat2(RESOLVE_IN_ROOT)` — or, on kernels without openat2, with a
//! component-by-component walk that expands symlinks inside the root — so nothing outside the
//! root is ever looked at. The final, symlink-free path is then opened with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`: a symlink swapped in meanwhile is an error, never a
//! way out.

use std::collections::VecDeque;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags};

use crate::sys::{errno, is_errno};

/// Most symlinks one resolution may follow (continuity's limit).
const MAX_LINKS: usize = 255;
/// Most symlinks one kernel path lookup follows (Linux's MAXSYMLINKS), which the fallback of
/// `RESOLVE_IN_ROOT` mimics.
const KERNEL_MAX_LINKS: usize = 40;

/// How a [`Root`] looks paths up. Both ways keep every lookup inside the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Resolver {
    /// `openat2(RESOLVE_IN_ROOT)` where the kernel has it (5.6 and later), else the walk.
    #[default]
    Auto,
    /// Always the component-by-component walk, as on kernels without openat2: lets tests on a
    /// newer kernel run the fallback, per call rather than for the whole process.
    Walk,
}

/// Path components of a clean in-root path (no empty, `.` or `..` components).
pub(crate) type Comps = Vec<Vec<u8>>;

/// An opened directory tree that every resolution stays inside.
pub(crate) struct Root {
    fd: OwnedFd,
    openat2: bool,
}

impl Root {
    /// Open `path` (which must be a directory; a symlink there is followed, as the caller named it).
    pub(crate) fn open(path: &Path, resolver: Resolver) -> io::Result<Root> {
        let fd = rfs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno)?;
        let openat2 = resolver == Resolver::Auto
            && match rfs::openat2(
                &fd,
                ".",
                OFlags::PATH | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::IN_ROOT,
            ) {
                Ok(_) => true,
                Err(rustix::io::Errno::NOSYS) | Err(rustix::io::Errno::INVAL) => false,
                Err(e) => return Err(errno(e)),
            };
        Ok(Root { fd, openat2 })
    }

    /// The root itself, or `comps` opened by one `openat2` with `resolve`; `None` when the
    /// kernel has no openat2 and the caller must walk the components.
    fn open_dir_directly(
        &self,
        comps: &[Vec<u8>],
        resolve: ResolveFlags,
    ) -> Option<io::Result<OwnedFd>> {
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        if comps.is_empty() {
            return Some(rfs::openat(&self.fd, ".", flags, Mode::empty()).map_err(errno));
        }
        self.openat2.then(|| {
            rfs::openat2(&self.fd, join_comps(comps), flags, Mode::empty(), resolve).map_err(errno)
        })
    }

    /// Open the directory at `comps`, every component an existing directory that is not a
    /// symlink (the output of [`Root::root_path`] after its parents were created).
    pub(crate) fn open_dir(&self, comps: &[Vec<u8>]) -> io::Result<OwnedFd> {
        let resolve =
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        if let Some(opened) = self.open_dir_directly(comps, resolve) {
            return opened;
        }
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let mut cur = rfs::openat(&self.fd, ".", flags, Mode::empty()).map_err(errno)?;
        for c in comps {
            // O_NOFOLLOW with O_PATH yields the link itself, which O_DIRECTORY then rejects.
            cur = rfs::openat(&cur, c.as_slice(), flags | OFlags::NOFOLLOW, Mode::empty())
                .map_err(errno)?;
        }
        Ok(cur)
    }

    /// Open the directory at `comps`, following symlinks inside the root (kernel semantics of
    /// `RESOLVE_IN_ROOT`): used only to look at things, never to decide where to write.
    fn open_dir_in_root(&self, comps: &[Vec<u8>]) -> io::Result<OwnedFd> {
        if let Some(opened) =
            self.open_dir_directly(comps, ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS)
        {
            return opened;
        }
        // openat2 refuses a name longer than PATH_MAX bytes with its NUL, which ends the
        // resolution of a name of very many components early; so must the walk, or each of
        // those components costs a walk over all the name before it.
        let len = comps.iter().map(|c| c.len() + 1).sum::<usize>();
        if len > libc::PATH_MAX as usize {
            return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
        }
        self.walk_in_root(comps)
    }

    /// The fallback of `RESOLVE_IN_ROOT`: walk component by component with
    /// `O_PATH|O_NOFOLLOW`, expanding symlinks with the root as `/` and `..` clamped at it.
    fn walk_in_root(&self, comps: &[Vec<u8>]) -> io::Result<OwnedFd> {
        let flags = OFlags::PATH | OFlags::CLOEXEC;
        let mut stack: Vec<OwnedFd> =
            vec![
                rfs::openat(&self.fd, ".", flags | OFlags::DIRECTORY, Mode::empty())
                    .map_err(errno)?,
            ];
        let mut queue: VecDeque<Vec<u8>> = comps.iter().cloned().collect();
        let mut links = 0usize;
        while let Some(c) = queue.pop_front() {
            match c.as_slice() {
                b"" | b"." => continue,
                b".." => {
                    if stack.len() > 1 {
                        stack.pop();
                    }
                    continue;
                }
                _ => {}
            }
            let cur = stack.last().expect("root stays on the stack");
            let fd = rfs::openat(cur, c.as_slice(), flags | OFlags::NOFOLLOW, Mode::empty())
                .map_err(errno)?;
            let st = rfs::fstat(&fd).map_err(errno)?;
            match FileType::from_raw_mode(st.st_mode) {
                FileType::Directory => stack.push(fd),
                FileType::Symlink => {
                    links += 1;
                    if links > KERNEL_MAX_LINKS {
                        return Err(io::Error::from_raw_os_error(libc::ELOOP));
                    }
                    let target = rfs::readlinkat(&fd, "", Vec::new())
                        .map_err(errno)?
                        .into_bytes();
                    if target.first() == Some(&b'/') {
                        stack.truncate(1);
                    }
                    for part in target.split(|&b| b == b'/').rev() {
                        queue.push_front(part.to_vec());
                    }
                }
                _ => return Err(io::Error::from_raw_os_error(libc::ENOTDIR)),
            }
        }
        Ok(stack.pop().expect("root stays on the stack"))
    }

    /// continuity's `walkLink` lookup of a clean absolute path: `Ok(Some(target))` for a
    /// symlink, `Ok(None)` for anything else or nothing.
    fn lstat_link(&self, path: &[u8]) -> io::Result<Option<Vec<u8>>> {
        let comps = split_comps(path);
        let Some((base, parent)) = comps.split_last() else {
            return Ok(None);
        };
        let dir = match self.open_dir_in_root(parent) {
            Ok(d) => d,
            Err(e) if is_errno(&e, libc::ENOENT) => return Ok(None),
            Err(e) => return Err(e),
        };
        match rfs::statat(&dir, base.as_slice(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => Ok(Some(
                rfs::readlinkat(&dir, base.as_slice(), Vec::new())
                    .map_err(errno)?
                    .into_bytes(),
            )),
            Ok(_) => Ok(None),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(errno(e)),
        }
    }

    fn walk_link(&self, path: &[u8], links: &mut usize) -> io::Result<(Vec<u8>, bool)> {
        if *links > MAX_LINKS {
            return Err(io::Error::other("too many links"));
        }
        let path = join(b"/", path);
        if path == b"/" {
            return Ok((path, false));
        }
        match self.lstat_link(&path)? {
            None => Ok((path, false)),
            Some(target) => {
                *links += 1;
                Ok((target, true))
            }
        }
    }

    /// continuity's recursive `walkLinks`, unrolled: a layer name may have hundreds of
    /// thousands of components, and one stack frame per component overflows the stack (an
    /// abort, not a panic). First peel the path down to its innermost case, keeping the
    /// components peeled off, then replay the recursion's returns from the inside out.
    fn walk_links(&self, path: &[u8], links: &mut usize) -> io::Result<Vec<u8>> {
        let mut files: Vec<&[u8]> = Vec::new();
        let mut rest = path;
        let mut cur = loop {
            let (dir, file) = split(rest);
            if dir.is_empty() {
                break self.walk_link(file, links)?.0;
            }
            if file.is_empty() {
                if dir == b"/" {
                    break dir.to_vec();
                }
                rest = &dir[..dir.len() - 1];
                continue;
            }
            files.push(file);
            rest = dir;
        };
        for file in files.into_iter().rev() {
            let (newpath, islink) = self.walk_link(&join(&cur, file), links)?;
            cur = if !islink || newpath.first() == Some(&b'/') {
                newpath
            } else {
                join(&cur, &newpath)
            };
        }
        Ok(cur)
    }

    /// continuity's `fs.RootPath(root, path)`, as components relative to the root, and how
    /// many symlinks were followed.
    pub(crate) fn root_path(&self, path: &[u8]) -> io::Result<(Comps, usize)> {
        if path.is_empty() {
            return Ok((Vec::new(), 0));
        }
        // A path of existing directories and no symlink resolves to itself, and one lookup
        // tells: the lexical walk below looks at every prefix, O(depth²) for a deep path.
        let comps = split_comps(&clean(path));
        if !comps.iter().any(|c| c == b"..") && self.open_dir(&comps).is_ok() {
            return Ok((comps, 0));
        }
        let mut path = path.to_vec();
        let mut links = 0usize;
        loop {
            let before = links;
            let newpath = self.walk_links(&path, &mut links)?;
            path = newpath;
            if before == links {
                let newpath = join(b"/", &path);
                if path == newpath {
                    return Ok((split_comps(&newpath), links));
                }
                path = newpath;
            }
        }
    }
}

/// `a/b/c` from components.
pub(crate) fn join_comps(comps: &[Vec<u8>]) -> Vec<u8> {
    comps.join(&b'/')
}

/// Components of a path, dropping empty and `.` ones (callers pass clean paths).
pub(crate) fn split_comps(path: &[u8]) -> Comps {
    path.split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(<[u8]>::to_vec)
        .collect()
}

/// Go's `filepath.Split`: everything up to and including the last `/`, and the rest.
pub(crate) fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i + 1], &path[i + 1..]),
        None => (&path[..0], path),
    }
}

/// Go's `filepath.Join` of two elements.
pub(crate) fn join(a: &[u8], b: &[u8]) -> Vec<u8> {
    if a.is_empty() && b.is_empty() {
        return Vec::new();
    }
    if a.is_empty() {
        return clean(b);
    }
    if b.is_empty() {
        return clean(a);
    }
    let mut s = Vec::with_capacity(a.len() + b.len() + 1);
    s.extend_from_slice(a);
    s.push(b'/');
    s.extend_from_slice(b);
    clean(&s)
}

/// Go's `filepath.Clean` (lexical: `..` is applied to the preceding name).
pub(crate) fn clean(path: &[u8]) -> Vec<u8> {
    if path.is_empty() {
        return b".".to_vec();
    }
    let rooted = path[0] == b'/';
    let mut out: Vec<&[u8]> = Vec::new();
    // Leading `..` of a relative path that cannot be cancelled.
    let mut dotdots = 0usize;
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                if !out.is_empty() {
                    out.pop();
                } else if !rooted {
                    dotdots += 1;
                }
            }
            _ => out.push(c),
        }
    }
    let mut s = Vec::with_capacity(path.len());
    if rooted {
        s.push(b'/');
    }
    let mut first = true;
    for _ in 0..dotdots {
        if !first {
            s.push(b'/');
        }
        s.extend_from_slice(b"..");
        first = false;
    }
    for c in out {
        if !first {
            s.push(b'/');
        }
        s.extend_from_slice(c);
        first = false;
    }
    if s.is_empty() {
        s.push(b'.');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_matches_go() {
        let cases: &[(&str, &str)] = &[
            ("", "."),
            ("a/../..", ".."),
            ("../a/..", ".."),
            ("/../a", "/a"),
            ("a//b/./c/", "a/b/c"),
            ("/", "/"),
            ("..", ".."),
            ("./", "."),
            ("a/b/../../..", ".."),
            ("../../x", "../../x"),
        ];
        for (i, o) in cases {
            assert_eq!(
                String::from_utf8(clean(i.as_bytes())).unwrap(),
                *o,
                "clean({i:?})"
            );
        }
        assert_eq!(join(b"/", b".."), b"/");
        assert_eq!(join(b"../x", b"b"), b"../x/b");
        assert_eq!(split(b"a/b/"), (&b"a/b/"[..], &b""[..]));
        assert_eq!(split(b"ab"), (&b""[..], &b"ab"[..]));
    }
}
