//! containerd's `archive.ChangeWriter` (docs/containerd.md §2): the changes of a walk, in walk
//! order, to tar entries byte-identical to containerd's, written to a [`TarSink`].

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::FileType;

use crate::control::CancelToken;
use crate::error::{Error, Result};
use crate::idmap::{Direction, IdMaps};
use crate::tar::{
    encode_header, HeaderToWrite, BLOCK_SIZE, TYPE_BLOCK, TYPE_CHAR, TYPE_DIR, TYPE_FIFO,
    TYPE_LINK, TYPE_REG, TYPE_SYMLINK,
};
use crate::walk::{self, At, Change, ChangeKind, Meta};

/// Where the change writer puts tar bytes. File contents can be read straight into the sink's
/// own buffer ([`TarSink::spare`]), saving a copy.
pub(crate) trait TarSink {
    fn write_tar(&mut self, bytes: &[u8]) -> Result<()>;

    /// Free room at the end of the sink's own buffer, so that file contents can be read
    /// straight into it (one copy fewer); empty when the sink has no such buffer.
    fn spare(&mut self) -> &mut [u8] {
        &mut []
    }

    /// Take `n` bytes just read into the start of [`TarSink::spare`] as written.
    fn commit_spare(&mut self, n: usize) -> Result<()> {
        debug_assert_eq!(n, 0, "a sink without spare room got bytes in it");
        Ok(())
    }
}

/// containerd's `ChangeWriter`: receives changes in walk order and writes the tar entries.
pub(crate) struct ChangeWriter<'a, S: TarSink> {
    sink: S,
    upper: PathBuf,
    /// The upper root, opened once: parents are looked up from it without following symlinks.
    upper_fd: OwnedFd,
    source_date_epoch: Option<i64>,
    cancel: Option<&'a CancelToken>,
    inode_src: HashMap<u64, Vec<u8>>,
    inode_refs: HashMap<u64, Vec<Vec<u8>>>,
    added_dirs: HashSet<Vec<u8>>,
    header_buf: Vec<u8>,
    copy_buf: Vec<u8>,
    /// Host → container owner mapping of the headers (identity by default).
    id_maps: IdMaps,
    /// Carry every xattr (but overlay's own) instead of only `security.capability`.
    all_xattrs: bool,
}

impl<'a, S: TarSink> ChangeWriter<'a, S> {
    pub(crate) fn new(
        sink: S,
        upper: &Path,
        source_date_epoch: Option<i64>,
        cancel: Option<&'a CancelToken>,
    ) -> Result<Self> {
        let (upper_fd, _) = walk::open_root(upper)?;
        Ok(ChangeWriter {
            sink,
            upper: upper.to_path_buf(),
            upper_fd,
            source_date_epoch,
            cancel,
            inode_src: HashMap::new(),
            inode_refs: HashMap::new(),
            added_dirs: HashSet::new(),
            header_buf: Vec::with_capacity(4 * BLOCK_SIZE),
            copy_buf: vec![0; 256 * 1024],
            id_maps: IdMaps::default(),
            all_xattrs: false,
        })
    }

    /// The opt-in header options (docs/containerd.md leaves them at their zero value): map
    /// owners through `id_maps`, carry all xattrs.
    pub(crate) fn with_header_options(mut self, id_maps: IdMaps, all_xattrs: bool) -> Self {
        self.id_maps = id_maps;
        self.all_xattrs = all_xattrs;
        self
    }

    /// Write the two zero blocks that end the archive and give back the sink.
    pub(crate) fn finish(mut self) -> Result<S> {
        self.sink.write_tar(&[0u8; 2 * BLOCK_SIZE])?;
        Ok(self.sink)
    }

    fn write_header(&mut self, h: &HeaderToWrite) -> Result<()> {
        self.header_buf.clear();
        encode_header(h, &mut self.header_buf)?;
        let buf = std::mem::take(&mut self.header_buf);
        let r = self.sink.write_tar(&buf);
        self.header_buf = buf;
        r
    }

    /// containerd's `HandleChange`, for a change of a walk (`/`-rooted path).
    pub(crate) fn handle_change(&mut self, change: Change) -> Result<()> {
        crate::control::check(self.cancel)?;
        let (at, meta) = match (change.kind, change.upper) {
            (ChangeKind::Delete, _) => return self.write_whiteout(change.path),
            (_, Some(u)) => u,
            (_, None) => return Err(Error::Internal("change without metadata".into())),
        };
        let kind = change.kind;
        let ft = meta.file_type();
        if ft == FileType::Socket {
            return Ok(());
        }
        let mut h = self.header_from_meta(&|| at.display(), change.path, meta)?;
        if ft == FileType::Symlink {
            h.linkname = at.read_link()?;
        }

        let mut additional_links = Vec::new();
        if ft != FileType::Directory && meta.nlink > 1 {
            let inode = meta.ino;
            if let Some(src) = self.inode_src.get(&inode) {
                h.typeflag = TYPE_LINK;
                h.linkname = src.clone();
                h.size = 0;
            } else {
                if kind == ChangeKind::Unmodified {
                    self.inode_refs.entry(inode).or_default().push(h.name);
                    return Ok(());
                }
                self.inode_src.insert(inode, h.name.clone());
                additional_links = self.inode_refs.remove(&inode).unwrap_or_default();
            }
        } else if kind == ChangeKind::Unmodified {
            return Ok(());
        }

        if self.all_xattrs {
            h.xattrs = crate::xattrs::carried_xattrs(&at)?;
        } else {
            h.capability = at.capability()?;
        }
        self.include_parents(&h)?;
        self.write_header(&h)?;

        if h.typeflag == TYPE_REG && h.size > 0 {
            self.copy_file(&at, meta, h.size as u64)?;
        }

        if !additional_links.is_empty() {
            let link_source = std::mem::take(&mut h.name);
            for extra in additional_links {
                h.name = extra;
                h.typeflag = TYPE_LINK;
                h.linkname = link_source.clone();
                h.size = 0;
                self.include_parents(&h)?;
                self.write_header(&h)?;
            }
        }
        Ok(())
    }

    fn write_whiteout(&mut self, path: &[u8]) -> Result<()> {
        let path = path.strip_prefix(b"/").unwrap_or(path);
        let (dir, base) = match path.iter().rposition(|&c| c == b'/') {
            Some(i) => (&path[..=i], &path[i + 1..]),
            None => (&b""[..], path),
        };
        let mut name = dir.to_vec();
        name.extend_from_slice(crate::WHITEOUT_PREFIX);
        name.extend_from_slice(base);
        let h = HeaderToWrite {
            name,
            typeflag: TYPE_REG,
            ..HeaderToWrite::default()
        };
        self.include_parents(&h)?;
        self.write_header(&h)
    }

    /// `tarheader.FileInfoHeaderNoLookups` + the adjustments of `HandleChange`.
    /// The symlink target (`linkname`) is the caller's to fill in.
    fn header_from_meta(
        &self,
        source: &dyn Fn() -> PathBuf,
        path: &[u8],
        meta: &Meta,
    ) -> Result<HeaderToWrite> {
        let ft = meta.file_type();
        let mut name = path.strip_prefix(b"/").unwrap_or(path).to_vec();
        let (uid, gid) = if self.id_maps.is_identity() {
            (meta.uid, meta.gid)
        } else {
            self.id_maps.map_owner(
                Direction::HostToContainer,
                meta.uid,
                meta.gid,
                &source().display(),
            )?
        };
        let mut h = HeaderToWrite {
            mode: (meta.mode & 0o7777) as i64,
            uid: uid as i64,
            gid: gid as i64,
            ..HeaderToWrite::default()
        };
        match ft {
            FileType::RegularFile => {
                h.typeflag = TYPE_REG;
                h.size = meta.size as i64;
            }
            FileType::Directory => {
                h.typeflag = TYPE_DIR;
                if name.last() != Some(&b'/') {
                    name.push(b'/');
                }
            }
            FileType::Symlink => h.typeflag = TYPE_SYMLINK,
            FileType::CharacterDevice => h.typeflag = TYPE_CHAR,
            FileType::BlockDevice => h.typeflag = TYPE_BLOCK,
            FileType::Fifo => h.typeflag = TYPE_FIFO,
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "unknown file type of {}",
                    source().display()
                )))
            }
        }
        h.name = name;
        let mut mtime = meta.mtime;
        if let Some(epoch) = self.source_date_epoch {
            if mtime > epoch || (mtime == epoch && meta.mtime_nsec > 0) {
                mtime = epoch;
            }
        }
        h.mtime = mtime;
        // containerd tests the file type bits as a bit mask, so directories and symlinks
        // (whose type bits overlap S_IFBLK/S_IFCHR) carry their rdev too.
        let mode = meta.mode;
        if mode & libc::S_IFBLK != 0 || mode & libc::S_IFCHR != 0 {
            let rdev = meta.rdev;
            h.devmajor = rustix::fs::major(rdev) as i64;
            h.devminor = rustix::fs::minor(rdev) as i64;
        }
        Ok(h)
    }

    /// containerd's `includeParents`: emit the parent directories (from upper) before `h`
    /// unless they are the root or already emitted. containerd recurses, each parent's own
    /// parents first; this walks down from the upper root once, by descriptors that do not
    /// follow symlinks, emitting the missing levels top-down: the same entries in the same order.
    fn include_parents(&mut self, h: &HeaderToWrite) -> Result<()> {
        let trimmed_len = h.name.len() - h.name.iter().rev().take_while(|&&c| c == b'/').count();
        let name = &h.name[..trimmed_len];
        if let Some(i) = name.iter().rposition(|&c| c == b'/') {
            let parent = &name[..i];
            if !parent.is_empty() && !self.added_dirs.contains(parent) {
                self.emit_missing_parents(parent.to_vec())?;
            }
        }
        if h.typeflag == TYPE_DIR {
            self.added_dirs.insert(name.to_vec());
        }
        Ok(())
    }

    /// Emit `dir` (relative, not yet emitted) and its ancestors that are not emitted yet.
    fn emit_missing_parents(&mut self, dir: Vec<u8>) -> Result<()> {
        // Ends of each prefix `a`, `a/b`, ... of `dir`.
        let mut ends: Vec<usize> = dir
            .iter()
            .enumerate()
            .filter(|&(_, &c)| c == b'/')
            .map(|(i, _)| i)
            .collect();
        ends.push(dir.len());
        // containerd's recursion stops at the deepest ancestor already emitted.
        let first_missing = (0..ends.len())
            .rev()
            .take_while(|&k| !self.added_dirs.contains(&dir[..ends[k]]))
            .last()
            .unwrap_or(ends.len());
        let mut fd: Option<OwnedFd> = None;
        for (k, &end) in ends.iter().enumerate() {
            let start = if k == 0 { 0 } else { ends[k - 1] + 1 };
            let rel = &dir[..end];
            let parent_fd = fd.as_ref().unwrap_or(&self.upper_fd).as_fd();
            let next = open_dir_nofollow(parent_fd, &dir[start..end], &self.upper, rel)?;
            if k >= first_missing {
                let st = rustix::fs::fstat(&next).map_err(|e| {
                    Error::path("fstat", walk::display_path(&self.upper, rel), sys_errno(e))
                })?;
                let meta = Meta::from_stat(&st);
                let display = || walk::display_path(&self.upper, rel);
                let mut h = self.header_from_meta(&display, rel, &meta)?;
                h.capability = dir_capability(&next, &display)?;
                self.added_dirs.insert(rel.to_vec());
                self.write_header(&h)?;
            }
            fd = Some(next);
        }
        Ok(())
    }

    /// Copy exactly `size` bytes of `source` into the tar, padded to a block; a file that
    /// grew or shrank since it was stat'ed is an error.
    fn copy_file(&mut self, at: &At, meta: &Meta, size: u64) -> Result<()> {
        let source = &at.display();
        let mut file = at.open_file(meta)?;
        let mut remaining = size;
        while remaining > 0 {
            crate::control::check(self.cancel)?;
            let spare = self.sink.spare();
            let n = if spare.is_empty() {
                let want = remaining.min(self.copy_buf.len() as u64) as usize;
                let n = read_some(&mut file, &mut self.copy_buf[..want], source)?;
                let buf = std::mem::take(&mut self.copy_buf);
                let r = self.sink.write_tar(&buf[..n]);
                self.copy_buf = buf;
                r?;
                n
            } else {
                let want = remaining.min(spare.len() as u64) as usize;
                let n = read_some(&mut file, &mut spare[..want], source)?;
                self.sink.commit_spare(n)?;
                n
            };
            remaining -= n as u64;
        }
        let mut probe = [0u8; 1];
        loop {
            match file.read(&mut probe) {
                Ok(0) => break,
                Ok(_) => return Err(changed_size(source)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::path("read", source, e)),
            }
        }
        let pad = (BLOCK_SIZE - (size % BLOCK_SIZE as u64) as usize) % BLOCK_SIZE;
        if pad > 0 {
            self.sink.write_tar(&[0u8; BLOCK_SIZE][..pad])?;
        }
        Ok(())
    }
}

/// One read of at least one byte from a file expected to hold more; EOF means it shrank.
fn read_some(file: &mut File, buf: &mut [u8], source: &Path) -> Result<usize> {
    loop {
        match file.read(buf) {
            Ok(0) => return Err(changed_size(source)),
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::path("read", source, e)),
        }
    }
}

fn changed_size(source: &Path) -> Error {
    Error::path(
        "copy",
        source,
        io::Error::new(
            io::ErrorKind::InvalidData,
            "file changed size while reading",
        ),
    )
}

fn sys_errno(e: rustix::io::Errno) -> io::Error {
    crate::sys::errno(e)
}

/// Open the directory `name` in `parent` without following a symlink there.
fn open_dir_nofollow(
    parent: std::os::fd::BorrowedFd<'_>,
    name: &[u8],
    root: &Path,
    rel: &[u8],
) -> Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    rustix::fs::openat(
        parent,
        std::ffi::OsStr::from_bytes(name),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => {
            walk::changed_during_diff(&walk::display_path(root, rel))
        }
        e => Error::path("open", walk::display_path(root, rel), sys_errno(e)),
    })
}

/// `security.capability` of an open directory; missing or unsupported is empty.
fn dir_capability(fd: &OwnedFd, display: &dyn Fn() -> PathBuf) -> Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; 256];
    loop {
        match rustix::fs::fgetxattr(fd, "security.capability", &mut buf[..]) {
            Ok(0) => return Ok(None),
            Ok(n) => {
                buf.truncate(n);
                return Ok(Some(buf));
            }
            Err(rustix::io::Errno::RANGE) if buf.len() < 1 << 16 => buf.resize(buf.len() * 4, 0),
            Err(rustix::io::Errno::NODATA) | Err(rustix::io::Errno::NOTSUP) => return Ok(None),
            Err(e) => {
                return Err(Error::path_detail(
                    "get xattr of",
                    display(),
                    "security.capability".into(),
                    sys_errno(e),
                ))
            }
        }
    }
}
