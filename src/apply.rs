//! Apply: one OCI layer stream (tar, gzip or zstd) unpacked onto a root directory.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::io::{self, BufRead, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use sha2::{Digest as _, Sha256};

use crate::compression;
use crate::control::{self, CancelToken, Progress};
use crate::digest::format_sha256;
use crate::error::{Error, Result};
use crate::resolve::{clean, join_comps, split, Comps, Root};
use crate::tarread::{
    Header, Nanos, TarReader, TYPE_BLOCK, TYPE_CHAR, TYPE_DIR, TYPE_FIFO, TYPE_LINK, TYPE_REG,
    TYPE_REGA, TYPE_SYMLINK, TYPE_XGLOBAL,
};

/// How whiteout entries become changes in the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhiteoutMode {
    /// Delete what they name (a plain directory as the root).
    #[default]
    Remove,
    /// Write overlayfs whiteouts: 0/0 character devices and `trusted.overlay.opaque=y`
    /// (the root is an overlay upperdir).
    Overlay,
}

/// Options of [`apply`].
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    pub whiteouts: WhiteoutMode,
    /// Overlay lowerdirs, top first: a missing parent directory takes its owner, mode, times
    /// and non-`trusted.*` xattrs from the first of these that has it.
    pub parents: Vec<PathBuf>,
    /// lchown entries to the uid/gid in the layer (containerd's default).
    pub same_owner: bool,
    /// syncfs the root's filesystem when done.
    pub sync_fs: bool,
    pub cancel: Option<CancelToken>,
    /// Called with the number of input (possibly compressed) bytes consumed so far.
    pub progress: Option<Progress>,
    /// `sha256:...` the uncompressed stream must hash to (the layer's diffID), checked once it
    /// has been read whole: on a mismatch apply fails, and the root may be partly written by
    /// then (as containerd's unpacker finds out only after applying).
    pub expected_diff_id: Option<String>,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            whiteouts: WhiteoutMode::Remove,
            parents: Vec::new(),
            same_owner: true,
            sync_fs: false,
            cancel: None,
            progress: None,
            expected_diff_id: None,
        }
    }
}

/// What [`apply`] read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// `sha256:...` of the uncompressed stream (trailing bytes included).
    pub digest: String,
    /// Size of the uncompressed stream.
    pub size: u64,
}

impl Applied {
    /// The media type of the returned descriptor: always plain tar.
    pub const MEDIA_TYPE: &'static str = crate::MEDIA_TYPE_TAR;
}

/// Unpack the layer read from `input` onto `root` with containerd's `archive.Apply` semantics,
/// never touching anything outside `root`.
///
/// The input is decompressed (gzip/zstd detected by magic bytes) on a worker thread that
/// hands buffers to this one over a bounded channel, so inflating overlaps with writing files;
/// a third thread hashes each buffer once this one is done with it.
pub fn apply<R: Read + Send>(root: &Path, input: R, opts: &ApplyOptions) -> Result<Applied> {
    control::check(opts.cancel.as_ref())?;
    if let Some(want) = &opts.expected_diff_id {
        crate::digest::validate_sha256(want)?;
    }
    let root_dir = Root::open(root).map_err(|e| Error::path("open root", root, e))?;
    let mut lowers = Vec::with_capacity(opts.parents.len());
    for p in &opts.parents {
        lowers.push(Root::open(p).map_err(|e| Error::path("open parent directory", p, e))?);
    }

    let progress = opts.progress.clone();
    let cancel = opts.cancel.clone();
    // Input bytes consumed; reported last whether or not the apply succeeds, as containerd's
    // progress reader does when it is closed.
    let consumed = Arc::new(AtomicU64::new(0));
    let decoder_count = consumed.clone();
    let result = std::thread::scope(|scope| -> Result<(String, u64, u64)> {
        // Reading the input runs on its own thread too: the decoder is the busiest stage, and
        // a read (a copy from the page cache, or a callback into the caller) is a tenth of it.
        let (input_tx, input_rx) = mpsc::sync_channel::<io::Result<Vec<u8>>>(CHANNEL_DEPTH);
        let (input_recycle_tx, input_recycle_rx) = mpsc::channel::<Vec<u8>>();
        let reader_count = decoder_count.clone();
        let input_reader = scope
            .spawn(move || read_input(input, input_tx, input_recycle_rx, progress, reader_count));
        let compressed = ChannelReader {
            rx: Some(input_rx),
            done: Some(Done::Recycle(input_recycle_tx)),
            buf: Vec::new(),
            pos: 0,
        };

        let (tx, rx) = mpsc::sync_channel::<io::Result<Vec<u8>>>(CHANNEL_DEPTH);
        // Consumed buffers go back to the decoder, so chunks are not allocated and zeroed anew.
        let (recycle_tx, recycle_rx) = mpsc::channel::<Vec<u8>>();
        let decoder =
            scope.spawn(move || decode(compressed, tx, recycle_rx, cancel, decoder_count));
        // Buffers the unpacker is done with are hashed on a third thread (sha256 is about a
        // third of the unpacker's work), in stream order, then recycled. The channel is
        // bounded so a slow hasher holds the unpacker back instead of piling up buffers.
        let (hash_tx, hash_rx) = mpsc::sync_channel::<Vec<u8>>(CHANNEL_DEPTH);
        let hasher = scope.spawn(move || hash_chunks(hash_rx, recycle_tx));

        let mut unpacker = Unpacker::new(root, &root_dir, lowers, opts)?;
        let mut reader = ChannelReader {
            rx: Some(rx),
            done: Some(Done::Hash(hash_tx)),
            buf: Vec::new(),
            pos: 0,
        };
        let result = unpacker.run(&mut reader);
        // Hands the last buffer to the hasher and closes its channel; dropping the receiver
        // stops the decoder if we are leaving early.
        reader.finish();
        drop(reader);
        let (digest, size) = hasher
            .join()
            .map_err(|_| Error::Internal("hasher thread panicked".into()))?;
        let decoded = decoder
            .join()
            .map_err(|_| Error::Internal("decoder thread panicked".into()))?;
        input_reader
            .join()
            .map_err(|_| Error::Internal("input reader thread panicked".into()))?;
        match (result, decoded) {
            (Ok(()), Ok(consumed)) => Ok((digest, size, consumed)),
            // The decoder's own error explains a stream that ended early.
            (Err(e), Err(de))
                if !matches!(de, Error::Internal(_)) && !matches!(e, Error::Canceled) =>
            {
                if matches!(e, Error::InvalidArchive(_)) || matches!(e, Error::Io { .. }) {
                    Err(de)
                } else {
                    Err(e)
                }
            }
            (Err(e), _) => Err(e),
            (Ok(()), Err(de)) => Err(de),
        }
    });

    if let Some(p) = &opts.progress {
        p.report(consumed.load(AtomicOrdering::Relaxed));
    }
    let (digest, size, _) = result?;
    if let Some(want) = opts
        .expected_diff_id
        .as_ref()
        .filter(|&want| *want != digest)
    {
        return Err(Error::InvalidArchive(format!(
            "layer diffID is {digest}, not the expected {want} ({} may be partly written)",
            root.display()
        )));
    }
    if opts.sync_fs {
        let fd = rfs::open(
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::path("open root for syncfs", root, errno(e)))?;
        rfs::syncfs(&fd).map_err(|e| Error::path("syncfs", root, errno(e)))?;
    }
    Ok(Applied { digest, size })
}

const CHUNK: usize = 256 * 1024;
const CHANNEL_DEPTH: usize = 8;
/// How much file data is copied between two looks at the cancel token.
const CANCEL_EVERY: u64 = 8 << 20;

/// The input thread: read (reporting progress as containerd does, before each read) and
/// forward every buffer read, in order, until end of input or the first error.
fn read_input<R: Read>(
    input: R,
    tx: SyncSender<io::Result<Vec<u8>>>,
    recycled: Receiver<Vec<u8>>,
    progress: Option<Progress>,
    counter: Arc<AtomicU64>,
) {
    let mut counted = CountingReader {
        inner: input,
        count: counter,
        progress,
    };
    loop {
        let mut buf = recycled.try_recv().unwrap_or_default();
        buf.resize(CHUNK, 0);
        // Whole chunks: the decoder peeks its magic bytes in the first one.
        let (mut n, mut end, mut failure) = (0, false, None);
        while n < CHUNK {
            match counted.read(&mut buf[n..]) {
                Ok(0) => {
                    end = true;
                    break;
                }
                Ok(k) => n += k,
                // Retried here as every reader above would retry it.
                Err(e)
                    if e.kind() == io::ErrorKind::Interrupted && !crate::error::is_canceled(&e) => {
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if n > 0 {
            buf.truncate(n);
            if tx.send(Ok(buf)).is_err() {
                // The decoder stopped (it or the unpacker reports why).
                return;
            }
        }
        if let Some(e) = failure {
            // The decoder sees the very error the input returned, after the bytes before it.
            let _ = tx.send(Err(e));
            return;
        }
        if end {
            return;
        }
    }
}

/// The worker: decompress and forward everything, trailing bytes included; returns the
/// input bytes consumed.
fn decode(
    input: ChannelReader,
    tx: SyncSender<io::Result<Vec<u8>>>,
    recycled: Receiver<Vec<u8>>,
    cancel: Option<CancelToken>,
    counter: Arc<AtomicU64>,
) -> Result<u64> {
    let fail = |e: Error, tx: &SyncSender<io::Result<Vec<u8>>>| {
        let _ = tx.send(Err(io::Error::other(e.to_string())));
        Err(e)
    };
    let inner = match compression::decompress_buffered(input) {
        Ok(r) => r,
        Err(e) => return fail(e, &tx),
    };
    let mut hashed = inner;
    loop {
        if cancel.as_ref().is_some_and(CancelToken::is_canceled) {
            let _ = tx.send(Err(crate::error::canceled_io()));
            return Err(Error::Canceled);
        }
        let mut buf = recycled.try_recv().unwrap_or_default();
        buf.resize(CHUNK, 0);
        let mut n = 0;
        // Fill whole chunks so the unpacker sees few, large buffers.
        while n < CHUNK {
            match hashed.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e)
                    if e.kind() == io::ErrorKind::Interrupted && !crate::error::is_canceled(&e) => {
                }
                Err(e) => {
                    let msg = format!("decompress layer: {e}");
                    // Anything the decoders report that is not a system error is bad data.
                    let kind = if e.kind() == io::ErrorKind::UnexpectedEof
                        || (e.raw_os_error().is_none() && !crate::error::is_canceled(&e))
                    {
                        io::ErrorKind::InvalidData
                    } else {
                        e.kind()
                    };
                    let _ = tx.send(Err(io::Error::new(kind, msg.clone())));
                    return Err(if crate::error::is_canceled(&e) {
                        Error::Canceled
                    } else if matches!(
                        kind,
                        io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput
                    ) {
                        Error::InvalidArchive(msg)
                    } else {
                        Error::io("read layer", e)
                    });
                }
            }
        }
        if n == 0 {
            break;
        }
        buf.truncate(n);
        if tx.send(Ok(buf)).is_err() {
            // The unpacker stopped (it reports why); nothing more to do.
            return Err(Error::Internal("unpacker stopped".into()));
        }
    }
    Ok(counter.load(AtomicOrdering::Relaxed))
}

struct CountingReader<R> {
    inner: R,
    count: Arc<AtomicU64>,
    progress: Option<Progress>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let before = self.count.load(AtomicOrdering::Relaxed);
        if let Some(p) = &self.progress {
            p.report(before);
        }
        let n = self.inner.read(buf)?;
        self.count.store(before + n as u64, AtomicOrdering::Relaxed);
        Ok(n)
    }
}

/// sha256 and size of every decompressed byte (the layer's diffID), buffer by buffer in
/// stream order; each buffer then goes back to the decoder.
fn hash_chunks(chunks: Receiver<Vec<u8>>, recycle: mpsc::Sender<Vec<u8>>) -> (String, u64) {
    let mut hasher = Sha256::new();
    let mut count = 0u64;
    for chunk in chunks {
        hasher.update(&chunk);
        count += chunk.len() as u64;
        // The decoder may be gone already; the buffer is then simply freed.
        let _ = recycle.send(chunk);
    }
    (format_sha256(&hasher.finalize()), count)
}

/// Where a [`ChannelReader`] passes each buffer once consumed (or at `finish`).
enum Done {
    /// To the hasher (which must see every buffer).
    Hash(SyncSender<Vec<u8>>),
    /// Back to the producer for reuse (which may be gone).
    Recycle(mpsc::Sender<Vec<u8>>),
}

impl Done {
    /// False if a buffer the hasher needed could not be delivered.
    fn pass(&self, buf: Vec<u8>) -> bool {
        match self {
            Done::Hash(tx) => tx.send(buf).is_ok(),
            Done::Recycle(tx) => {
                let _ = tx.send(buf);
                true
            }
        }
    }
}

/// The receiving end of a channel of buffers, as a `BufRead` whose buffers are the
/// producer's chunks (the decoder's input, the unpacker's tar stream).
struct ChannelReader {
    rx: Option<Receiver<io::Result<Vec<u8>>>>,
    done: Option<Done>,
    buf: Vec<u8>,
    pos: usize,
}

impl ChannelReader {
    /// Pass the current buffer to the hasher and close its channel.
    fn finish(&mut self) {
        if let Some(done) = self.done.take() {
            let last = std::mem::take(&mut self.buf);
            if !last.is_empty() {
                done.pass(last);
            }
        }
        self.pos = 0;
    }
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(out.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for ChannelReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.pos == self.buf.len() {
            let Some(rx) = &self.rx else { return Ok(&[]) };
            match rx.recv() {
                Ok(Ok(chunk)) => {
                    let used = std::mem::replace(&mut self.buf, chunk);
                    if !used.is_empty() {
                        if let Some(done) = &self.done {
                            // Fails only if the hasher is gone, which it is not before
                            // `finish`; the digest would then be wrong, so say so.
                            if !done.pass(used) {
                                return Err(io::Error::other("hasher thread stopped"));
                            }
                        }
                    }
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.rx = None;
                    return Err(e);
                }
                Err(_) => {
                    self.rx = None;
                    return Ok(&[]);
                }
            }
        }
        Ok(&self.buf[self.pos..])
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
    }
}

fn errno(e: rustix::io::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

fn is_errno(e: &io::Error, n: i32) -> bool {
    e.raw_os_error() == Some(n)
}

/// containerd's `boundTime`: before 1970 or past int64 nanoseconds → the epoch.
fn bound_time(t: Nanos) -> Nanos {
    if t < 0 || t > i64::MAX as Nanos {
        0
    } else {
        t
    }
}

fn timespec(t: Nanos) -> rfs::Timespec {
    rfs::Timespec {
        tv_sec: (t / 1_000_000_000) as i64,
        tv_nsec: (t % 1_000_000_000) as _,
    }
}

/// atime = max(atime, mtime), both bounded, as containerd's `chtimes` call.
fn entry_times(h: &Header) -> rfs::Timestamps {
    let atime = match h.atime {
        Some(a) if a >= h.mtime => a,
        _ => h.mtime,
    };
    rfs::Timestamps {
        last_access: timespec(bound_time(atime)),
        last_modification: timespec(bound_time(h.mtime)),
    }
}

/// A uid/gid as the kernel receives Go's `int`: truncated to 32 bits, all ones = unchanged.
fn owner_id(v: i64) -> Option<u32> {
    let v = v as u32;
    (v != u32::MAX).then_some(v)
}

/// Go's `unix.Mkdev` passed through `mknod(2)`'s 32-bit `dev` argument.
fn mknod_dev(major: u32, minor: u32) -> u64 {
    let (major, minor) = (major as u64, minor as u64);
    let dev = ((major & 0x0000_0fff) << 8)
        | ((major & 0xffff_f000) << 32)
        | (minor & 0x0000_00ff)
        | ((minor & 0xffff_ff00) << 12);
    dev & 0xffff_ffff
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

fn proc_fd_path(dir: BorrowedFd<'_>, name: &[u8]) -> Vec<u8> {
    let mut p = format!("/proc/self/fd/{}", dir.as_raw_fd()).into_bytes();
    if !name.is_empty() {
        p.push(b'/');
        p.extend_from_slice(name);
    }
    p
}

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const WHITEOUT_OPAQUE: &[u8] = b".wh..wh..opq";
const XATTR_PREFIX: &[u8] = b"SCHILY.xattr.";

/// A resolved parent directory: its components and an `O_PATH` descriptor.
#[derive(Clone)]
struct ParentDir {
    comps: Comps,
    fd: Rc<OwnedFd>,
    /// The resolution followed no symlink.
    zero_links: bool,
}

/// Directory descriptors kept open between invalidations.
const FD_CACHE_MAX: usize = 64;

struct Unpacker<'a> {
    root_path: &'a Path,
    root: &'a Root,
    root_dir: Rc<OwnedFd>,
    lowers: Vec<Root>,
    opts: &'a ApplyOptions,
    in_userns: bool,
    /// `fs.RootPath` results that followed no symlink, keyed by the layer's directory string.
    /// Such a resolution only visited existing directories, so only a removal can change it
    /// (new names never can); every removal clears this and `dir_fds`.
    resolved: HashMap<Vec<u8>, Comps>,
    /// Open descriptors of recently used existing directories, keyed by their components.
    dir_fds: HashMap<Comps, Rc<OwnedFd>>,
    unpacked: HashSet<Vec<u8>>,
    opaque_done: HashSet<Vec<u8>>,
    /// Directory entries (cleaned name, times) whose times are set again at the end.
    dirs: Vec<(Vec<u8>, rfs::Timestamps)>,
}

/// How the metadata of a new entry is reached.
enum Node {
    /// An open (not `O_PATH`) descriptor of the entry itself.
    Fd(OwnedFd),
    /// Only by name inside the parent directory.
    Name,
}

impl<'a> Unpacker<'a> {
    fn new(
        root_path: &'a Path,
        root: &'a Root,
        lowers: Vec<Root>,
        opts: &'a ApplyOptions,
    ) -> Result<Self> {
        let root_dir = Rc::new(
            root.open_dir(&[])
                .map_err(|e| Error::path("open root", root_path, e))?,
        );
        Ok(Unpacker {
            root_path,
            root,
            root_dir,
            lowers,
            opts,
            in_userns: in_user_namespace(),
            resolved: HashMap::new(),
            dir_fds: HashMap::new(),
            unpacked: HashSet::new(),
            opaque_done: HashSet::new(),
            dirs: Vec::new(),
        })
    }

    /// The host path of in-root components, for messages.
    fn display(&self, comps: &[Vec<u8>], name: &[u8]) -> PathBuf {
        display_at(self.root_path, comps, name)
    }

    fn invalidate(&mut self) {
        self.resolved.clear();
        self.dir_fds.clear();
    }

    /// Run `make` (a create at `base` in `pfd`); if the name exists, remove whatever is there
    /// and make again. containerd looks first and removes; names are usually fresh, so trying
    /// first saves a lookup per entry.
    fn create_replacing<T>(
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

    fn remember_fd(&mut self, comps: Comps, fd: Rc<OwnedFd>) {
        if self.dir_fds.len() >= FD_CACHE_MAX {
            self.dir_fds.clear();
        }
        self.dir_fds.insert(comps, fd);
    }

    fn cancel_check(&self) -> Result<()> {
        control::check(self.opts.cancel.as_ref())
    }

    fn run(&mut self, reader: &mut ChannelReader) -> Result<()> {
        let mut tr = TarReader::new(reader);
        loop {
            self.cancel_check()?;
            let Some(hdr) = tr.next_entry()? else { break };
            if let Some(p) = &self.opts.progress {
                p.count_entry();
            }
            self.entry(&mut tr, hdr)?;
        }
        for (name, times) in std::mem::take(&mut self.dirs) {
            self.cancel_check()?;
            let (comps, _) = self.resolve(&name)?;
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
                        let pfd = match self.dir_fds.get(parent) {
                            Some(fd) => Ok(fd.clone()),
                            None => self.root.open_dir(parent).map(Rc::new),
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
            res.map_err(|e| Error::path("set times of", self.display(&comps, b""), errno(e)))?;
        }
        // Trailing bytes after the archive are read (and hashed) as containerd does.
        let r = tr.get_mut();
        loop {
            self.cancel_check()?;
            let n = r.fill_buf().map_err(read_io)?.len();
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
        if let Some(c) = self.resolved.get(key) {
            return Ok((c.clone(), true));
        }
        let (comps, links) = self
            .root
            .root_path(dir)
            .map_err(|e| Error::path("failed to get root path of", OsStr::from_bytes(dir), e))?;
        if links == 0 {
            self.resolved.insert(key.to_vec(), comps.clone());
        }
        Ok((comps, links == 0))
    }

    /// Resolve the directory part of an entry, creating missing directories (containerd's
    /// `mkparent`), and open it.
    fn parent_dir(&mut self, dir: &[u8]) -> Result<ParentDir> {
        let (comps, zero_links) = self.resolve(dir)?;
        if comps.is_empty() {
            return Ok(ParentDir {
                comps,
                fd: self.root_dir.clone(),
                zero_links,
            });
        }
        if let Some(fd) = self.dir_fds.get(&comps) {
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
        let fd = Rc::new(fd);
        self.remember_fd(comps.clone(), fd.clone());
        Ok(ParentDir {
            comps,
            fd,
            zero_links,
        })
    }

    /// containerd's `mkparent`: every missing component is made 0755 (attributes from the
    /// first lower that has it); an existing non-directory is an error.
    fn mkparent(&mut self, comps: &[Vec<u8>]) -> Result<OwnedFd> {
        let dflags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut cur: OwnedFd = self
            .root
            .open_dir(&[])
            .map_err(|e| Error::path("open root", self.root_path, e))?;
        let mut creating = false;
        for (i, c) in comps.iter().enumerate() {
            let here = || self.display(&comps[..=i], b"");
            if !creating {
                match rfs::statat(&cur, c.as_slice(), AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                        cur = rfs::openat(&cur, c.as_slice(), dflags, Mode::empty())
                            .map_err(|e| Error::path("open", here(), errno(e)))?;
                        continue;
                    }
                    Ok(_) => {
                        return Err(Error::path(
                            "mkparent",
                            here(),
                            io::Error::from_raw_os_error(libc::ENOTDIR),
                        ))
                    }
                    Err(rustix::io::Errno::NOENT) => creating = true,
                    Err(e) => return Err(Error::path("lstat", here(), errno(e))),
                }
            }
            match rfs::mkdirat(&cur, c.as_slice(), Mode::from_raw_mode(0o755)) {
                Ok(()) => {
                    let dfd = rfs::openat(
                        &cur,
                        c.as_slice(),
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|e| Error::path("open", here(), errno(e)))?;
                    rfs::fchmod(&dfd, Mode::from_raw_mode(0o755))
                        .map_err(|e| Error::path("chmod", here(), errno(e)))?;
                    self.copy_parent_info(&comps[..=i], &dfd)?;
                    cur = dfd;
                }
                Err(rustix::io::Errno::EXIST) => {
                    // Made meanwhile: fine if it is a directory (and then left as it is).
                    cur = rfs::openat(&cur, c.as_slice(), dflags, Mode::empty())
                        .map_err(|e| Error::path("mkdir", here(), errno(e)))?;
                }
                Err(e) => return Err(Error::path("mkdir", here(), errno(e))),
            }
        }
        Ok(cur)
    }

    /// Owner, mode, times and non-`trusted.*` xattrs of the directory at `comps` in the first
    /// lower that has it; a lower with a non-directory there stops the search.
    fn copy_parent_info(&self, comps: &[Vec<u8>], dst: &OwnedFd) -> Result<()> {
        let mut abs = b"/".to_vec();
        abs.extend_from_slice(&join_comps(comps));
        for (lower, lower_path) in self.lowers.iter().zip(&self.opts.parents) {
            let (lcomps, _) = lower
                .root_path(&abs)
                .map_err(|e| Error::path("resolve in parent", lower_path, e))?;
            let Some((lname, lparent)) = lcomps.split_last() else {
                continue;
            };
            let lshow = || {
                let mut p = lower_path.clone();
                for c in &lcomps {
                    p.push(OsStr::from_bytes(c));
                }
                p
            };
            let lpfd = match lower.open_dir(lparent) {
                Ok(fd) => fd,
                Err(e) if is_errno(&e, libc::ENOENT) => continue,
                Err(e) => return Err(Error::path("lstat", lshow(), e)),
            };
            let st = match rfs::statat(&lpfd, lname.as_slice(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(rustix::io::Errno::NOENT) => continue,
                Err(e) => return Err(Error::path("lstat", lshow(), errno(e))),
            };
            if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                break;
            }
            let show = || self.display(comps, b"");
            if let Err(e) = rfs::fchown(
                dst,
                Some(rfs::Uid::from_raw(st.st_uid)),
                Some(rfs::Gid::from_raw(st.st_gid)),
            ) {
                let same =
                    rfs::fstat(dst).is_ok_and(|d| d.st_uid == st.st_uid && d.st_gid == st.st_gid);
                if !(e == rustix::io::Errno::PERM && same) {
                    return Err(Error::path("failed to chown", show(), errno(e)));
                }
            }
            rfs::fchmod(dst, Mode::from_raw_mode(st.st_mode & 0o7777))
                .map_err(|e| Error::path("failed to chmod", show(), errno(e)))?;
            let times = rfs::Timestamps {
                last_access: rfs::Timespec {
                    tv_sec: st.st_atime as i64,
                    tv_nsec: st.st_atime_nsec as _,
                },
                last_modification: rfs::Timespec {
                    tv_sec: st.st_mtime as i64,
                    tv_nsec: st.st_mtime_nsec as _,
                },
            };
            rfs::futimens(dst, &times)
                .map_err(|e| Error::path("failed to utime", show(), errno(e)))?;

            let src = proc_fd_path(lpfd.as_fd(), lname);
            let mut names = Vec::new();
            match llistxattr_all(&src) {
                Ok(n) => names = n,
                Err(rustix::io::Errno::NOTSUP) | Err(rustix::io::Errno::NODATA) => {}
                Err(e) => return Err(Error::path("failed to list xattrs on", lshow(), errno(e))),
            }
            for name in names {
                if name.starts_with(b"trusted.") {
                    continue;
                }
                let value = match lgetxattr_all(&src, &name) {
                    Ok(v) => v,
                    Err(rustix::io::Errno::NOTSUP) | Err(rustix::io::Errno::NODATA) => continue,
                    Err(e) => return Err(Error::path("failed to get xattr on", lshow(), errno(e))),
                };
                match rfs::fsetxattr(dst, name.as_slice(), &value, rfs::XattrFlags::CREATE) {
                    Ok(())
                    | Err(rustix::io::Errno::NOTSUP)
                    | Err(rustix::io::Errno::NODATA)
                    | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(Error::path("failed to set xattr on", show(), errno(e))),
                }
            }
            return Ok(());
        }
        Ok(())
    }

    fn entry<R: BufRead>(&mut self, tr: &mut TarReader<R>, hdr: Header) -> Result<()> {
        let name = clean(&hdr.name);
        if self.in_userns && matches!(hdr.typeflag, TYPE_BLOCK | TYPE_CHAR) {
            return Ok(());
        }
        let (dir, base) = split(&name);
        let (dir, base) = (dir.to_vec(), base.to_vec());
        if matches!(base.as_slice(), b"" | b"." | b"..") {
            // Only names that clean to the root itself end this way.
            let (comps, _) = self.root.root_path(&dir).map_err(|e| {
                Error::path("failed to get root path of", OsStr::from_bytes(&dir), e)
            })?;
            if comps.is_empty() {
                return Ok(());
            }
            return Err(Error::Internal(format!(
                "unexpected entry name {:?}",
                String::from_utf8_lossy(&name)
            )));
        }
        let parent = self.parent_dir(&dir)?;
        let pfd = parent.fd.as_fd();
        let rp = self.root_path;
        let show = || display_at(rp, &parent.comps, &base);

        // Whiteouts.
        if let Some(orig) = base.strip_prefix(WHITEOUT_PREFIX) {
            if base != WHITEOUT_OPAQUE && matches!(orig, b"" | b"." | b"..") {
                return Err(Error::InvalidArchive(format!(
                    "invalid whiteout name: {}",
                    String::from_utf8_lossy(&base)
                )));
            }
            let wrap = |e: Error| match e {
                Error::Path { path, source, .. } => Error::Path {
                    context: "failed to convert whiteout file",
                    path,
                    source,
                },
                other => other,
            };
            match self.opts.whiteouts {
                WhiteoutMode::Remove => {
                    if base == WHITEOUT_OPAQUE {
                        let key = join_comps(&parent.comps);
                        if self.opaque_done.insert(key.clone()) {
                            let dfd = rfs::openat(
                                pfd,
                                ".",
                                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                                Mode::empty(),
                            )
                            .map_err(|e| {
                                Error::path("open", display_at(rp, &parent.comps, b""), errno(e))
                            })
                            .map_err(wrap)?;
                            self.invalidate();
                            self.remove_unpacked_from(&dfd, &key).map_err(wrap)?;
                        }
                    } else {
                        self.invalidate();
                        remove_all(pfd, orig)
                            .map_err(|e| {
                                Error::path("remove", display_at(rp, &parent.comps, orig), e)
                            })
                            .map_err(wrap)?;
                    }
                }
                WhiteoutMode::Overlay => {
                    if base == WHITEOUT_OPAQUE {
                        rfs::openat(
                            pfd,
                            ".",
                            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                            Mode::empty(),
                        )
                        .and_then(|d| {
                            rfs::fsetxattr(
                                &d,
                                "trusted.overlay.opaque",
                                b"y",
                                rfs::XattrFlags::empty(),
                            )
                        })
                        .map_err(|e| {
                            Error::path(
                                "set trusted.overlay.opaque on",
                                display_at(rp, &parent.comps, b""),
                                errno(e),
                            )
                        })
                        .map_err(wrap)?;
                    } else {
                        let at = || display_at(rp, &parent.comps, orig);
                        rfs::mknodat(pfd, orig, FileType::CharacterDevice, Mode::empty(), 0)
                            .map_err(|e| Error::path("mknod whiteout", at(), errno(e)))
                            .map_err(wrap)?;
                        rfs::chownat(
                            pfd,
                            orig,
                            owner_id(hdr.uid).map(rfs::Uid::from_raw),
                            owner_id(hdr.gid).map(rfs::Gid::from_raw),
                            AtFlags::SYMLINK_NOFOLLOW,
                        )
                        .map_err(|e| Error::path("chown whiteout", at(), errno(e)))
                        .map_err(wrap)?;
                    }
                }
            }
            return Ok(());
        }

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
            TYPE_DIR => {
                let created = match rfs::mkdirat(pfd, base.as_slice(), mode) {
                    Ok(()) => true,
                    Err(rustix::io::Errno::EXIST) => {
                        let is_dir = rfs::statat(pfd, base.as_slice(), AtFlags::SYMLINK_NOFOLLOW)
                            .is_ok_and(|st| {
                                FileType::from_raw_mode(st.st_mode) == FileType::Directory
                            });
                        if is_dir {
                            false
                        } else {
                            self.invalidate();
                            remove_all(pfd, &base).map_err(|e| Error::path("remove", show(), e))?;
                            rfs::mkdirat(pfd, base.as_slice(), mode)
                                .map_err(|e| Error::path("mkdir", show(), errno(e)))?;
                            true
                        }
                    }
                    Err(e) => return Err(Error::path("mkdir", show(), errno(e))),
                };
                let fd = rfs::openat(
                    pfd,
                    base.as_slice(),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| Error::path("open", show(), errno(e)))?;
                if created {
                    rfs::fchmod(&fd, mode).map_err(|e| Error::path("chmod", show(), errno(e)))?;
                }
                Node::Fd(fd)
            }
            TYPE_REG | TYPE_REGA => {
                let create = || {
                    rfs::openat(
                        pfd,
                        base.as_slice(),
                        OFlags::WRONLY
                            | OFlags::CREATE
                            | OFlags::EXCL
                            | OFlags::NOFOLLOW
                            | OFlags::CLOEXEC,
                        mode,
                    )
                };
                let fd = self.create_replacing(pfd, &base, "create", &show, create)?;
                // containerd chmods right after creating too; the final chmod below sets the
                // same bits, so that first one has no visible effect and is skipped.
                self.copy_data(tr, &fd, &show)?;
                Node::Fd(fd)
            }
            TYPE_BLOCK | TYPE_CHAR | TYPE_FIFO => {
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
                let dev = mknod_dev(hdr.devmajor as u32, hdr.devminor as u32);
                let make = || rfs::mknodat(pfd, base.as_slice(), ft, mode, dev);
                self.create_replacing(pfd, &base, "mknod", &show, make)?;
                Node::Name
            }
            TYPE_LINK => {
                // A fresh name cannot change a cached (symlink-free) resolution; a replaced
                // one was removed above, which already cleared the caches.
                let (ldir, lbase) = split(&hdr.linkname);
                let (mut target, _) = self.root.root_path(ldir).map_err(|e| {
                    Error::path("failed to get root path of", OsStr::from_bytes(ldir), e)
                })?;
                match lbase {
                    b"" | b"." => {}
                    b".." => {
                        target.pop();
                    }
                    _ => target.push(lbase.to_vec()),
                }
                let link_err = |e: io::Error| Error::Path {
                    context: "link",
                    path: PathBuf::from(format!(
                        "{} -> {}",
                        show().display(),
                        display_at(rp, &target, b"").display()
                    )),
                    source: e,
                };
                let Some((tname, tparent)) = target.split_last() else {
                    return Err(link_err(io::Error::from_raw_os_error(libc::EPERM)));
                };
                let tpfd = self.root.open_dir(tparent).map_err(link_err)?;
                rfs::linkat(
                    &tpfd,
                    tname.as_slice(),
                    pfd,
                    base.as_slice(),
                    AtFlags::empty(),
                )
                .map_err(|e| link_err(errno(e)))?;
                Node::Name
            }
            TYPE_SYMLINK => {
                let make = || rfs::symlinkat(hdr.linkname.as_slice(), pfd, base.as_slice());
                self.create_replacing(pfd, &base, "symlink", &show, make)?;
                Node::Name
            }
            TYPE_XGLOBAL => {
                // Ignored, but only after whatever was at its path was removed.
                self.unpacked.insert(key_of(&parent.comps, &base));
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
        self.unpacked.insert(join_comps(&comps));
        if hdr.typeflag == TYPE_DIR {
            self.dirs.push((name.clone(), entry_times(&hdr)));
            // `name/` now resolves, without symlinks, to this very directory: remember it for
            // the entries inside.
            if parent.zero_links {
                self.resolved
                    .insert(cache_key(&name).to_vec(), comps.clone());
                if let Node::Fd(fd) = node {
                    self.remember_fd(comps, Rc::new(fd));
                }
            }
        }
        Ok(())
    }

    fn copy_data<R: BufRead>(
        &self,
        tr: &mut TarReader<R>,
        fd: &OwnedFd,
        show: &dyn Fn() -> PathBuf,
    ) -> Result<()> {
        let mut since_check = 0u64;
        loop {
            let n = tr.read_chunk(|mut data| {
                while !data.is_empty() {
                    match rustix::io::write(fd, data) {
                        Ok(0) => {
                            return Err(Error::path(
                                "write",
                                show(),
                                io::Error::from(io::ErrorKind::WriteZero),
                            ))
                        }
                        Ok(k) => data = &data[k..],
                        Err(rustix::io::Errno::INTR) => {}
                        Err(e) => return Err(Error::path("write", show(), errno(e))),
                    }
                }
                Ok(())
            })?;
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

    /// lchown, xattrs, chmod (not for symlinks) and times, in containerd's order.
    fn set_metadata(
        &self,
        pfd: BorrowedFd<'_>,
        base: &[u8],
        node: &Node,
        hdr: &Header,
        show: &dyn Fn() -> PathBuf,
    ) -> Result<()> {
        let uid = owner_id(hdr.uid).map(rfs::Uid::from_raw);
        let gid = owner_id(hdr.gid).map(rfs::Gid::from_raw);
        if self.opts.same_owner {
            match node {
                Node::Fd(fd) => rfs::fchown(fd, uid, gid),
                Node::Name => rfs::chownat(pfd, base, uid, gid, AtFlags::SYMLINK_NOFOLLOW),
            }
            .map_err(|e| Error::Path {
                context: "failed to Lchown",
                path: PathBuf::from(format!(
                    "{} (uid {}, gid {})",
                    show().display(),
                    hdr.uid,
                    hdr.gid
                )),
                source: errno(e),
            })?;
        }

        for (k, v) in &hdr.pax {
            let Some(key) = k.strip_prefix(XATTR_PREFIX) else {
                continue;
            };
            if key.starts_with(b"trusted.") {
                // containerd refuses admin attributes from archives (with a warning).
                continue;
            }
            let res = match node {
                Node::Fd(fd) => rfs::fsetxattr(fd, key, v, rfs::XattrFlags::empty()),
                Node::Name => {
                    rfs::lsetxattr(proc_fd_path(pfd, base), key, v, rfs::XattrFlags::empty())
                }
            };
            match res {
                Ok(()) | Err(rustix::io::Errno::NOTSUP) => {}
                Err(rustix::io::Errno::PERM)
                    if key.starts_with(b"user.")
                        && rfs::statat(pfd, base, AtFlags::SYMLINK_NOFOLLOW).is_ok_and(|st| {
                            !matches!(
                                FileType::from_raw_mode(st.st_mode),
                                FileType::RegularFile | FileType::Directory
                            )
                        }) => {}
                Err(e) => {
                    return Err(Error::Path {
                        context: "failed to setxattr",
                        path: PathBuf::from(format!(
                            "{} (key {})",
                            show().display(),
                            String::from_utf8_lossy(key)
                        )),
                        source: errno(e),
                    })
                }
            }
        }

        let mode = Mode::from_raw_mode((hdr.mode & 0o7777) as u32);
        let times = entry_times(hdr);
        match node {
            Node::Fd(fd) => {
                rfs::fchmod(fd, mode).map_err(|e| Error::path("chmod", show(), errno(e)))?;
                rfs::futimens(fd, &times)
            }
            Node::Name => {
                // chmod through an O_PATH descriptor of the entry itself, never through a link.
                let fd = rfs::openat(
                    pfd,
                    base,
                    OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| Error::path("lstat", show(), errno(e)))?;
                let st = rfs::fstat(&fd).map_err(|e| Error::path("lstat", show(), errno(e)))?;
                if FileType::from_raw_mode(st.st_mode) != FileType::Symlink {
                    rfs::chmod(proc_fd_path(fd.as_fd(), b""), mode)
                        .map_err(|e| Error::path("chmod", show(), errno(e)))?;
                }
                rfs::utimensat(pfd, base, &times, AtFlags::SYMLINK_NOFOLLOW)
            }
        }
        .map_err(|e| Error::path("failed call to UtimesNanoAt for", show(), errno(e)))
    }

    /// Remove-mode opaque whiteout: delete every entry below the directory that this layer
    /// did not write, descending into directories it did write (containerd's walk).
    fn remove_unpacked_from(&self, dir: &OwnedFd, key: &[u8]) -> Result<()> {
        let mut names =
            read_dir_names(dir).map_err(|e| Error::path("readdir", self.display_key(key), e))?;
        names.sort();
        for name in names {
            let child = key_join(key, &name);
            let st = match rfs::statat(dir, name.as_slice(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(rustix::io::Errno::NOENT) => continue,
                Err(e) => return Err(Error::path("lstat", self.display_key(&child), errno(e))),
            };
            if !self.unpacked.contains(&child) {
                remove_all(dir.as_fd(), &name)
                    .map_err(|e| Error::path("remove", self.display_key(&child), e))?;
            } else if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                let sub = match rfs::openat(
                    dir,
                    name.as_slice(),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                ) {
                    Ok(fd) => fd,
                    Err(rustix::io::Errno::NOENT) => continue,
                    Err(e) => return Err(Error::path("open", self.display_key(&child), errno(e))),
                };
                self.remove_unpacked_from(&sub, &child)?;
            }
        }
        Ok(())
    }

    fn display_key(&self, key: &[u8]) -> PathBuf {
        self.root_path.join(OsStr::from_bytes(key))
    }
}

/// The host path of in-root components, for messages.
fn display_at(root: &Path, comps: &[Vec<u8>], name: &[u8]) -> PathBuf {
    let mut p = root.to_path_buf();
    for c in comps {
        p.push(OsStr::from_bytes(c));
    }
    if !name.is_empty() {
        p.push(OsStr::from_bytes(name));
    }
    p
}

fn read_io(e: io::Error) -> Error {
    if crate::error::is_canceled(&e) {
        Error::Canceled
    } else if matches!(
        e.kind(),
        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
    ) {
        Error::InvalidArchive(e.to_string())
    } else {
        Error::io("read layer", e)
    }
}

/// Cache key of a directory string: `a/b/` and `a/b` resolve alike.
fn cache_key(dir: &[u8]) -> &[u8] {
    if dir.len() > 1 && dir.ends_with(b"/") {
        &dir[..dir.len() - 1]
    } else {
        dir
    }
}

fn key_join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(dir.len() + name.len() + 1);
    if !dir.is_empty() {
        k.extend_from_slice(dir);
        k.push(b'/');
    }
    k.extend_from_slice(name);
    k
}

fn key_of(parent: &[Vec<u8>], base: &[u8]) -> Vec<u8> {
    key_join(&join_comps(parent), base)
}

fn read_dir_names(dir: &OwnedFd) -> io::Result<Vec<Vec<u8>>> {
    let mut names = Vec::new();
    let d = rfs::Dir::read_from(dir).map_err(errno)?;
    for ent in d {
        let ent = ent.map_err(errno)?;
        let n = ent.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(n.to_vec());
        }
    }
    Ok(names)
}

/// Go's `os.RemoveAll` relative to a directory descriptor: a symlink is removed, not followed;
/// a missing entry is fine.
pub(crate) fn remove_all(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    match rfs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(rustix::io::Errno::ISDIR) | Err(rustix::io::Errno::PERM) => {}
        Err(e) => return Err(errno(e)),
    }
    let sub = match rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(e) => return Err(errno(e)),
    };
    for child in read_dir_names(&sub)? {
        remove_all(sub.as_fd(), &child)?;
    }
    match rfs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(errno(e)),
    }
}

fn llistxattr_all(path: &[u8]) -> Result<Vec<Vec<u8>>, rustix::io::Errno> {
    loop {
        let n = rfs::llistxattr_query(path)?;
        let mut buf = vec![0u8; n];
        match rfs::llistxattr(path, &mut buf[..]) {
            Ok(k) => {
                buf.truncate(k);
                return Ok(buf
                    .split(|&b| b == 0)
                    .filter(|s| !s.is_empty())
                    .map(<[u8]>::to_vec)
                    .collect());
            }
            Err(rustix::io::Errno::RANGE) => continue,
            Err(e) => return Err(e),
        }
    }
}

fn lgetxattr_all(path: &[u8], name: &[u8]) -> Result<Vec<u8>, rustix::io::Errno> {
    loop {
        let n = rfs::lgetxattr_query(path, name)?;
        let mut buf = vec![0u8; n];
        match rfs::lgetxattr(path, name, &mut buf[..]) {
            Ok(k) => {
                buf.truncate(k);
                return Ok(buf);
            }
            Err(rustix::io::Errno::RANGE) => continue,
            Err(e) => return Err(e),
        }
    }
}
