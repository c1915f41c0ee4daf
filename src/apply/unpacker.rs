//! The unpacker: one tar entry at a time onto the root (containerd's `createTarFile`), with
//! the resolution caches that keep a layer of many entries from resolving each path anew.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::io::{self, BufRead};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};

use super::metadata::entry_times;
use super::names::{NameList, PathSet};
use super::pipeline::ChannelReader;
use super::remove::remove_all;
use super::workers::{self, Next, Pool, Prefix};
use super::{ApplyOptions, DeviceNodes, OverlayWhiteoutForm, OverlayXattrsChoice};
use crate::control;
use crate::error::{Error, Result};
use crate::overlay_forms::OverlayXattrs;
use crate::resolve::{clean, join_comps, split, split_comps, Comps, Root};
use crate::sys::errno;
use crate::tar::reader::read_error;
use crate::tar::{
    EntryHeader, TarReader, TYPE_BLOCK, TYPE_CHAR, TYPE_DIR, TYPE_FIFO, TYPE_LINK, TYPE_REG,
    TYPE_REGA, TYPE_SYMLINK, TYPE_XGLOBAL,
};
use crate::WHITEOUT_PREFIX;

/// How much file data is copied between two looks at the cancel token.
const CANCEL_EVERY: u64 = 8 << 20;

/// A resolved parent directory: its components and an `O_PATH` descriptor.
#[derive(Clone)]
pub(super) struct ParentDir {
    pub(super) comps: Comps,
    pub(super) fd: Arc<OwnedFd>,
    /// The resolution followed no symlink.
    pub(super) zero_links: bool,
}

/// Directory descriptors kept open between invalidations.
const FD_CACHE_MAX: usize = 64;
/// Bytes the resolution caches may hold (keys and components, with their allocations): past
/// this they start over, so a layer of many deep directories costs no more memory than a
/// flat one.
const CACHE_BYTES_MAX: usize = 4 << 20;
/// Linux's PATH_MAX, with the terminating NUL: containerd reaches every entry by its full
/// host path, which the kernel refuses from this length on.
const PATH_MAX: usize = libc::PATH_MAX as usize;

pub(super) struct Unpacker<'a> {
    pub(super) root_path: &'a Path,
    pub(super) root: &'a Root,
    pub(super) root_dir: Arc<OwnedFd>,
    pub(super) lowers: Vec<Root>,
    pub(super) opts: &'a ApplyOptions,
    pub(super) in_userns: bool,
    /// Overlay mode: where opaque and xattr-whiteout markers go.
    pub(super) overlay_ns: OverlayXattrs,
    /// Overlay mode: single-name whiteouts are written as xattr whiteouts (forced, or
    /// because mknod of a 0/0 device was refused).
    pub(super) xattr_whiteouts: bool,
    /// Overlay mode with xattr whiteouts: the whiteout files written so far, by directory
    /// key, removed again if the directory turns opaque (overlayfs does not read them there).
    pub(super) xattr_whiteouts_in: HashMap<Vec<u8>, Vec<Vec<u8>>>,
    /// `fs.RootPath` results that followed no symlink, keyed by the layer's directory string.
    /// Such a resolution only visited existing directories, so only a removal can change it
    /// (new names never can); every removal clears this and `dir_fds`.
    /// Values are the components joined, one allocation each rather than one per component.
    pub(super) resolved: HashMap<Vec<u8>, Vec<u8>>,
    /// Open descriptors of recently used existing directories, keyed by their components.
    pub(super) dir_fds: HashMap<Vec<u8>, Arc<OwnedFd>>,
    /// What `resolved` and `dir_fds` hold, in [`cache_cost`] bytes.
    pub(super) cache_bytes: usize,
    pub(super) unpacked: PathSet,
    pub(super) opaque_done: HashSet<Vec<u8>>,
    /// Directory entries (cleaned name, times) whose times are set again at the end.
    pub(super) dirs: NameList<rfs::Timestamps>,
    /// The unpack workers, when there are more threads than this one (`unpack_threads`).
    pub(super) pool: Option<Pool>,
}

/// How the metadata of a new entry is reached.
pub(super) enum Node {
    /// An open (not `O_PATH`) descriptor of the entry itself.
    Fd(OwnedFd),
    /// Only by name inside the parent directory.
    Name,
}

impl<'a> Unpacker<'a> {
    pub(super) fn new(
        root_path: &'a Path,
        root: &'a Root,
        lowers: Vec<Root>,
        opts: &'a ApplyOptions,
    ) -> Result<Self> {
        let root_dir = Arc::new(
            root.open_dir(&[])
                .map_err(|e| Error::path("open root", root_path, e))?,
        );
        let in_userns = in_user_namespace();
        let overlay_ns = match opts.overlay_xattrs {
            OverlayXattrsChoice::Trusted => OverlayXattrs::Trusted,
            OverlayXattrsChoice::User => OverlayXattrs::User,
            OverlayXattrsChoice::Auto if in_userns => OverlayXattrs::User,
            OverlayXattrsChoice::Auto => OverlayXattrs::Trusted,
        };
        Ok(Unpacker {
            root_path,
            root,
            root_dir,
            lowers,
            opts,
            in_userns,
            overlay_ns,
            xattr_whiteouts: opts.overlay_whiteout == OverlayWhiteoutForm::Xattr,
            xattr_whiteouts_in: HashMap::new(),
            resolved: HashMap::new(),
            dir_fds: HashMap::new(),
            cache_bytes: 0,
            unpacked: PathSet::default(),
            opaque_done: HashSet::new(),
            dirs: NameList::default(),
            pool: None,
        })
    }

    /// The host path of in-root components, for messages.
    pub(super) fn display(&self, comps: &[Vec<u8>], name: &[u8]) -> PathBuf {
        display_at(self.root_path, comps, name)
    }

    pub(super) fn invalidate(&mut self) {
        self.resolved.clear();
        self.dir_fds.clear();
        self.cache_bytes = 0;
    }

    /// Make room for `cost` more bytes in the caches, emptying them when full.
    fn reserve_cache(&mut self, cost: usize) {
        if self.cache_bytes + cost > CACHE_BYTES_MAX {
            self.invalidate();
        }
        self.cache_bytes += cost;
    }

    fn remember_resolved(&mut self, key: Vec<u8>, comps: &[Vec<u8>]) {
        let joined = join_comps(comps);
        self.reserve_cache(key.len() + cache_cost(&joined));
        self.resolved.insert(key, joined);
    }

    /// containerd reaches `comps`/`name` by its host path: refuse, as the kernel refuses it
    /// there, a path of PATH_MAX bytes or more.
    pub(super) fn check_path_len(&self, comps: &[Vec<u8>], name: &[u8]) -> Result<()> {
        let len = self.root_path.as_os_str().len()
            + comps.iter().map(|c| c.len() + 1).sum::<usize>()
            + if name.is_empty() { 0 } else { name.len() + 1 };
        if len < PATH_MAX {
            return Ok(());
        }
        Err(Error::path(
            "lstat",
            self.display(comps, name),
            io::Error::from_raw_os_error(libc::ENAMETOOLONG),
        ))
    }

    /// Run `make` (a create at `base` in `pfd`); if the name exists, remove whatever is there
    /// and make again. containerd looks first and removes; names are usually fresh, so trying
    /// first saves a lookup per entry.
    pub(super) fn create_replacing<T>(
        &mut self,
        pfd: BorrowedFd<'_>,
        base: &[u8],
        what: &'static str,
        show: &dyn Fn() -> PathBuf,
        make: impl Fn() -> rustix::io::Result<T>,
    ) -> Result<T> {
        match make() {
            Err(rustix::io::Errno::EXIST) => {
                self.invalidate();
                remove_all(pfd, base).map_err(|e| Error::path("remove", show(), e))?;
                make()
            }
            other => other,
        }
        .map_err(|e| Error::path(what, show(), errno(e)))
    }

    pub(super) fn remember_fd(&mut self, comps: Comps, fd: Arc<OwnedFd>) {
        if self.dir_fds.len() >= FD_CACHE_MAX {
            let freed: usize = self.dir_fds.keys().map(|k| cache_cost(k)).sum();
            self.cache_bytes = self.cache_bytes.saturating_sub(freed);
            self.dir_fds.clear();
        }
        let key = join_comps(&comps);
        self.reserve_cache(cache_cost(&key));
        self.dir_fds.insert(key, fd);
    }

    pub(super) fn cancel_check(&self) -> Result<()> {
        control::check(self.opts.cancel.as_ref())
    }

    pub(super) fn run(&mut self, reader: &mut ChannelReader) -> Result<()> {
        let threads = workers::threads(self.opts.unpack_threads);
        if threads <= 1 {
            return self.run_entries(reader);
        }
        std::thread::scope(|scope| {
            self.pool = Some(Pool::start(scope, threads));
            let res = self.run_entries(reader);
            // Before any error of the entry being read: those of the files in flight.
            let res = res.map_err(|e| self.settle_error(e));
            // Closes the job queue: the workers stop, and the scope joins them.
            self.pool = None;
            res
        })
    }

    fn run_entries(&mut self, reader: &mut ChannelReader) -> Result<()> {
        let mut tr = TarReader::new(reader);
        loop {
            self.cancel_check()?;
            let Some(hdr) = tr.next_entry()? else { break };
            if let Some(p) = &self.opts.progress {
                p.count_entry();
            }
            // Regular files may go to the workers; everything else runs here once the files in
            // flight are committed.
            match self.offload(&mut tr, hdr)? {
                Next::Taken => {}
                Next::Here(hdr, prefix) => self.entry(&mut tr, hdr, prefix)?,
                Next::Fresh(hdr, parent, base) => {
                    let dir = hdr.typeflag == TYPE_DIR;
                    match self.entry(&mut tr, hdr, None) {
                        Ok(()) => self.made_fresh(parent, base, dir)?,
                        Err(e) => return Err(self.fresh_failed(e, parent, base, dir)),
                    }
                }
            }
        }
        self.settle()?;
        let mut dirs = std::mem::take(&mut self.dirs);
        dirs.drain(|name, times| {
            self.cancel_check()?;
            let (comps, _) = self.resolve(name)?;
            let res =
                match comps.split_last() {
                    None => rfs::openat(
                        self.root_dir.as_fd(),
                        ".",
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .and_then(|fd| rfs::futimens(&fd, &times)),
                    Some((last, parent)) => {
                        let pfd = match self.dir_fds.get(&join_comps(parent)) {
                            Some(fd) => Ok(fd.clone()),
                            None => self.root.open_dir(parent).map(Arc::new),
                        };
                        match pfd {
                            Ok(pfd) => {
                                let r = rfs::utimensat(
                                    &*pfd,
                                    last.as_slice(),
                                    &times,
                                    AtFlags::SYMLINK_NOFOLLOW,
                                );
                                self.remember_fd(parent.to_vec(), pfd);
                                r
                            }
                            Err(e) => Err(rustix::io::Errno::from_io_error(&e)
                                .unwrap_or(rustix::io::Errno::IO)),
                        }
                    }
                };
            res.map_err(|e| Error::path("set times of", self.display(&comps, b""), errno(e)))
        })?;
        // Trailing bytes after the archive are read (and hashed) as containerd does.
        let r = tr.get_mut();
        loop {
            self.cancel_check()?;
            let n = r.fill_buf().map_err(read_error)?.len();
            if n == 0 {
                break;
            }
            r.consume(n);
        }
        Ok(())
    }

    /// `fs.RootPath` of a directory string: the components, and whether no symlink was
    /// followed.
    fn resolve(&mut self, dir: &[u8]) -> Result<(Comps, bool)> {
        let key = cache_key(dir);
        if let Some(joined) = self.resolved.get(key) {
            return Ok((split_comps(joined), true));
        }
        let (comps, links) = self
            .root
            .root_path(dir)
            .map_err(|e| Error::path("resolve", OsStr::from_bytes(dir), e))?;
        if links == 0 {
            self.remember_resolved(key.to_vec(), &comps);
        }
        Ok((comps, links == 0))
    }

    /// Resolve the directory part of an entry, creating missing directories (containerd's
    /// `mkparent`), and open it.
    pub(super) fn parent_dir(&mut self, dir: &[u8]) -> Result<ParentDir> {
        let (comps, zero_links) = self.resolve(dir)?;
        self.check_path_len(&comps, b"")?;
        if comps.is_empty() {
            return Ok(ParentDir {
                comps,
                fd: self.root_dir.clone(),
                zero_links,
            });
        }
        if let Some(fd) = self.dir_fds.get(&join_comps(&comps)) {
            return Ok(ParentDir {
                fd: fd.clone(),
                comps,
                zero_links,
            });
        }
        // Usually the directory exists: one openat2. Otherwise walk and create.
        let fd = match self.root.open_dir(&comps) {
            Ok(fd) => fd,
            Err(_) => self.mkparent(&comps)?,
        };
        let fd = Arc::new(fd);
        self.remember_fd(comps.clone(), fd.clone());
        Ok(ParentDir {
            comps,
            fd,
            zero_links,
        })
    }

    /// One entry, as containerd's `createTarFile`; `prefix`: data of a regular file already
    /// read from the stream (and how that read ended).
    fn entry<R: BufRead>(
        &mut self,
        tr: &mut TarReader<R>,
        hdr: EntryHeader,
        prefix: Option<Prefix>,
    ) -> Result<()> {
        let name = clean(&hdr.name);
        let is_device = matches!(hdr.typeflag, TYPE_BLOCK | TYPE_CHAR);
        if is_device && self.in_userns && self.opts.devices == DeviceNodes::Auto {
            // containerd's: mknod of devices is refused in a user namespace.
            return Ok(());
        }
        let (dir, base) = split(&name);
        let (dir, base) = (dir.to_vec(), base.to_vec());
        if matches!(base.as_slice(), b"" | b"." | b"..") {
            // Only names that clean to the root itself end this way.
            let (comps, _) = self
                .root
                .root_path(&dir)
                .map_err(|e| Error::path("resolve", OsStr::from_bytes(&dir), e))?;
            if comps.is_empty() {
                return Ok(());
            }
            return Err(Error::Internal(format!(
                "unexpected entry name {:?}",
                String::from_utf8_lossy(&name)
            )));
        }
        let parent = self.parent_dir(&dir)?;
        if let Some(orig) = base.strip_prefix(WHITEOUT_PREFIX) {
            if !self.convert_whiteout(&parent, &base, orig, &hdr)? {
                return Ok(());
            }
        }
        self.check_path_len(&parent.comps, &base)?;
        let pfd = parent.fd.as_fd();
        let rp = self.root_path;
        let show = || display_at(rp, &parent.comps, &base);

        // Whatever is at the path is replaced unless a directory meets a directory
        // (containerd: lstat, then RemoveAll). Names are usually fresh, so files, directories,
        // symlinks and devices are created first and only an EEXIST leads to a look and a
        // removal; hardlinks (whose target is resolved after the removal) and the rest look
        // first.
        let create_first = matches!(
            hdr.typeflag,
            TYPE_DIR | TYPE_REG | TYPE_REGA | TYPE_SYMLINK | TYPE_BLOCK | TYPE_CHAR | TYPE_FIFO
        );
        if !create_first && rfs::statat(pfd, base.as_slice(), AtFlags::SYMLINK_NOFOLLOW).is_ok() {
            self.invalidate();
            remove_all(pfd, &base).map_err(|e| Error::path("remove", show(), e))?;
        }

        let mode = Mode::from_raw_mode((hdr.mode & 0o7777) as u32);
        let node = match hdr.typeflag {
            TYPE_DIR => self.create_dir(pfd, &base, mode, &show)?,
            TYPE_REG | TYPE_REGA => {
                let fd = self.create_file(pfd, &base, mode, &show)?;
                // containerd chmods right after creating too; the final chmod sets the same
                // bits, so that first one has no visible effect and is skipped.
                if let Some(prefix) = prefix {
                    workers::write_all(&fd, &prefix.data, &show)?;
                    if let Some(e) = prefix.error {
                        return Err(e);
                    }
                }
                self.copy_data(tr, &fd, &show)?;
                Node::Fd(fd)
            }
            TYPE_BLOCK | TYPE_CHAR | TYPE_FIFO => {
                match self.create_device(pfd, &base, mode, &hdr, &show) {
                    Err(e)
                        if is_device
                            && self.opts.devices == DeviceNodes::SkipRefused
                            && matches!(&e, Error::Path { source, .. }
                                if source.raw_os_error() == Some(libc::EPERM)) =>
                    {
                        return Ok(())
                    }
                    Err(Error::Path {
                        context,
                        path,
                        source,
                        ..
                    }) if is_device && source.raw_os_error() == Some(libc::EPERM) => {
                        return Err(Error::Path {
                            context,
                            path,
                            detail: Some(format!(
                                "(device {}:{}: creating device nodes needs CAP_MKNOD; \
                                 they can be skipped on request)",
                                hdr.devmajor, hdr.devminor
                            )),
                            source,
                        })
                    }
                    other => other?,
                }
            }
            TYPE_LINK => self.create_hardlink(pfd, &base, &hdr.linkname, &show)?,
            TYPE_SYMLINK => {
                let make = || rfs::symlinkat(hdr.linkname.as_slice(), pfd, base.as_slice());
                self.create_replacing(pfd, &base, "symlink", &show, make)?;
                Node::Name
            }
            TYPE_XGLOBAL => {
                // Ignored, but only after whatever was at its path was removed.
                self.unpacked.insert(&key_of(&parent.comps, &base));
                return Ok(());
            }
            t => {
                return Err(Error::InvalidArchive(format!(
                    "unhandled tar header type {t} ({:?}) for {:?}",
                    t as char,
                    String::from_utf8_lossy(&hdr.name)
                )))
            }
        };

        self.set_metadata(pfd, &base, &node, &hdr, &show)?;

        let mut comps = parent.comps;
        comps.push(base);
        self.unpacked.insert(&join_comps(&comps));
        if hdr.typeflag == TYPE_DIR {
            self.dirs.push(&name, entry_times(&hdr));
            // `name/` now resolves, without symlinks, to this very directory: remember it for
            // the entries inside.
            if parent.zero_links {
                self.remember_resolved(cache_key(&name).to_vec(), &comps);
                if let Node::Fd(fd) = node {
                    self.remember_fd(comps, Arc::new(fd));
                }
            }
        }
        Ok(())
    }

    /// A directory, unless one is there already (which is kept, as containerd keeps it).
    fn create_dir(
        &mut self,
        pfd: BorrowedFd<'_>,
        base: &[u8],
        mode: Mode,
        show: &dyn Fn() -> PathBuf,
    ) -> Result<Node> {
        let created = match rfs::mkdirat(pfd, base, mode) {
            Ok(()) => true,
            Err(rustix::io::Errno::EXIST) => {
                let is_dir = rfs::statat(pfd, base, AtFlags::SYMLINK_NOFOLLOW)
                    .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory);
                if is_dir {
                    false
                } else {
                    self.invalidate();
                    remove_all(pfd, base).map_err(|e| Error::path("remove", show(), e))?;
                    rfs::mkdirat(pfd, base, mode)
                        .map_err(|e| Error::path("mkdir", show(), errno(e)))?;
                    true
                }
            }
            Err(e) => return Err(Error::path("mkdir", show(), errno(e))),
        };
        let fd = rfs::openat(
            pfd,
            base,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::path("open", show(), errno(e)))?;
        if created {
            rfs::fchmod(&fd, mode).map_err(|e| Error::path("chmod", show(), errno(e)))?;
        }
        Ok(Node::Fd(fd))
    }

    /// A new regular file, open for writing its data.
    pub(super) fn create_file(
        &mut self,
        pfd: BorrowedFd<'_>,
        base: &[u8],
        mode: Mode,
        show: &dyn Fn() -> PathBuf,
    ) -> Result<OwnedFd> {
        let create = || {
            rfs::openat(
                pfd,
                base,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                mode,
            )
        };
        self.create_replacing(pfd, base, "create", show, create)
    }

    /// A block or character device or a FIFO.
    fn create_device(
        &mut self,
        pfd: BorrowedFd<'_>,
        base: &[u8],
        mode: Mode,
        hdr: &EntryHeader,
        show: &dyn Fn() -> PathBuf,
    ) -> Result<Node> {
        if !(0..=u32::MAX as i64).contains(&hdr.devmajor)
            || !(0..=u32::MAX as i64).contains(&hdr.devminor)
        {
            return Err(Error::InvalidArchive(format!(
                "device number {}:{} for {:?} out of range",
                hdr.devmajor,
                hdr.devminor,
                String::from_utf8_lossy(&hdr.name)
            )));
        }
        let ft = match hdr.typeflag {
            TYPE_BLOCK => FileType::BlockDevice,
            TYPE_CHAR => FileType::CharacterDevice,
            _ => FileType::Fifo,
        };
        // Go's `unix.Mkdev`, passed through `mknod(2)`'s 32-bit `dev` argument.
        let dev = rfs::makedev(hdr.devmajor as u32, hdr.devminor as u32) & 0xffff_ffff;
        let make = || rfs::mknodat(pfd, base, ft, mode, dev);
        self.create_replacing(pfd, base, "mknod", show, make)?;
        Ok(Node::Name)
    }

    /// A hard link to `linkname`, resolved in the root as containerd resolves it.
    fn create_hardlink(
        &mut self,
        pfd: BorrowedFd<'_>,
        base: &[u8],
        linkname: &[u8],
        show: &dyn Fn() -> PathBuf,
    ) -> Result<Node> {
        // A fresh name cannot change a cached (symlink-free) resolution; a replaced one was
        // removed before, which already cleared the caches.
        let (ldir, lbase) = split(linkname);
        let (mut target, _) = self
            .root
            .root_path(ldir)
            .map_err(|e| Error::path("resolve", OsStr::from_bytes(ldir), e))?;
        match lbase {
            b"" | b"." => {}
            b".." => {
                target.pop();
            }
            _ => target.push(lbase.to_vec()),
        }
        let link_err = |e: io::Error| {
            Error::path_detail(
                "link",
                show(),
                format!("-> {}", self.display(&target, b"").display()),
                e,
            )
        };
        self.check_path_len(&target, b"")?;
        let Some((tname, tparent)) = target.split_last() else {
            return Err(link_err(io::Error::from_raw_os_error(libc::EPERM)));
        };
        let tpfd = self.root.open_dir(tparent).map_err(link_err)?;
        rfs::linkat(&tpfd, tname.as_slice(), pfd, base, AtFlags::empty())
            .map_err(|e| link_err(errno(e)))?;
        Ok(Node::Name)
    }

    /// The entry's data into `fd`, looking at the cancel token now and then.
    fn copy_data<R: BufRead>(
        &self,
        tr: &mut TarReader<R>,
        fd: &OwnedFd,
        show: &dyn Fn() -> PathBuf,
    ) -> Result<()> {
        let mut since_check = 0u64;
        loop {
            let n = tr.read_chunk(|data| super::workers::write_all(fd, data, show))?;
            if n == 0 {
                return Ok(());
            }
            since_check += n as u64;
            if since_check >= CANCEL_EVERY {
                since_check = 0;
                self.cancel_check()?;
            }
        }
    }
}

/// The host path of in-root components, for messages.
pub(super) fn display_at(root: &Path, comps: &[Vec<u8>], name: &[u8]) -> PathBuf {
    let mut p = root.to_path_buf();
    for c in comps {
        p.push(OsStr::from_bytes(c));
    }
    if !name.is_empty() {
        p.push(OsStr::from_bytes(name));
    }
    p
}

/// What caching a joined path costs, with the map's own share.
fn cache_cost(joined: &[u8]) -> usize {
    const PER_ENTRY: usize = 96;
    PER_ENTRY + joined.len()
}

/// Cache key of a directory string: `a/b/` and `a/b` resolve alike.
pub(super) fn cache_key(dir: &[u8]) -> &[u8] {
    if dir.len() > 1 && dir.ends_with(b"/") {
        &dir[..dir.len() - 1]
    } else {
        dir
    }
}

pub(super) fn key_join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(dir.len() + name.len() + 1);
    if !dir.is_empty() {
        k.extend_from_slice(dir);
        k.push(b'/');
    }
    k.extend_from_slice(name);
    k
}

pub(super) fn key_of(parent: &[Vec<u8>], base: &[u8]) -> Vec<u8> {
    key_join(&join_comps(parent), base)
}

/// containerd's `userns.RunningInUserNS`.
fn in_user_namespace() -> bool {
    match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(s) => {
            let f: Vec<&str> = s.split_whitespace().collect();
            !(f.len() == 3 && f[0] == "0" && f[1] == "0" && f[2] == "4294967295")
        }
        Err(_) => false,
    }
}
