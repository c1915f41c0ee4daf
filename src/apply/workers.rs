//! Unpacking on more than one core (docs/parallel-unpack.md): regular files whose name and
//! parents nothing in flight touches are handed, with their data, to worker threads that
//! create them in place (`O_EXCL`), write them and set their owner, xattrs, mode and times in
//! containerd's order; the unpacker thread keeps everything else, and takes the workers'
//! results back in stream order, so errors are reported where a one-thread apply reports
//! them and nothing after the first failure stays in the tree.
//!
//! The ordering rules (docs/containerd.md §3) hold because an entry is only ever processed
//! while files are in flight if its parent resolved from the symlink-free cache to an open
//! directory and neither its path nor any of its parents is the path of a file in flight, and
//! it is a regular file (to a worker) or a directory, symlink or FIFO at a fresh name (made
//! here at once, undone if an earlier file fails). Every other entry (hardlinks, whiteouts,
//! devices, replacements, a file in a directory not seen yet, a name in flight again) first
//! waits for every file in flight to be committed, then runs today's code.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, BufRead};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::Scope;

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};

use super::metadata::entry_times;
use super::unpacker::{cache_key, display_at, key_join, Node, ParentDir, Unpacker};
use super::xattrs::is_refused_xattr;
use super::WhiteoutMode;
use crate::error::{Error, Result};
use crate::overlay_forms::OverlayXattrs;
use crate::resolve::{clean, split};
use crate::sys::errno;
use crate::tar::pax::key::XATTR_PREFIX;
use crate::tar::{EntryHeader, TarReader, TYPE_DIR, TYPE_FIFO, TYPE_REG, TYPE_REGA, TYPE_SYMLINK};
use crate::WHITEOUT_PREFIX;

/// Data a file may have to go to a worker; a larger one is written by the unpacker itself
/// (it gains nothing from a worker, and memory stays bounded).
const JOB_DATA_MAX: usize = 1 << 20;
/// Files in flight per worker: enough to keep each busy while the unpacker parses ahead.
const JOBS_PER_WORKER: usize = 256;
/// Bytes in flight (data and headers), whatever the number of workers.
const BYTES_MAX: usize = 16 << 20;
/// Runs of entries of one parent directory in flight: each may keep a directory descriptor
/// open, and the apply keeps within a small `RLIMIT_NOFILE`.
const PARENT_RUNS_MAX: usize = 64;

/// The step of a file's creation that failed, for the message today's code gives.
enum Step {
    Create,
    Write,
    Lchown,
    Xattr(Vec<u8>),
    Chmod,
    Times,
}

enum Outcome {
    /// Created, written and complete.
    Done,
    /// The name is taken: nothing was made; the unpacker replaces it in stream order.
    Exists,
    /// A step failed; `created`: the file exists under its name (partly made, as containerd
    /// leaves it).
    Failed {
        created: bool,
        step: Step,
        err: io::Error,
    },
    /// Not attempted: an earlier file failed and the apply is stopping.
    Skipped,
}

/// One file for a worker.
struct Job {
    seq: u64,
    parent: Arc<OwnedFd>,
    base: Vec<u8>,
    mode: Mode,
    data: Vec<u8>,
    /// The lchown's IDs (`None` inside: unchanged), or no lchown at all.
    owner: Option<(Option<rfs::Uid>, Option<rfs::Gid>)>,
    ignore_chown_errors: bool,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    times: rfs::Timestamps,
}

struct Finished {
    seq: u64,
    outcome: Outcome,
    /// The job's data, for a file the unpacker then makes itself.
    data: Vec<u8>,
}

/// An entry made while files before it are in flight: a file on a worker, or an entry at a
/// fresh name made here (undone if a file before it fails).
struct Pending {
    seq: u64,
    parent: ParentDir,
    base: Vec<u8>,
    kind: Kind,
}

enum Kind {
    File {
        key: Vec<u8>,
        hdr: Box<EntryHeader>,
        cost: usize,
    },
    Made {
        dir: bool,
    },
}

/// What the unpacker does with an entry once [`Unpacker::offload`] has seen it.
pub(super) enum Next {
    /// Handed to a worker.
    Taken,
    /// Unpack it here (everything before it is committed), with data already read from it.
    Here(EntryHeader, Option<Prefix>),
    /// Unpack it here although files before it are in flight: its name is fresh and its
    /// parent ready. Then [`Unpacker::made_fresh`] or, on failure, [`Unpacker::fresh_failed`].
    Fresh(EntryHeader, ParentDir, Vec<u8>),
}

/// The workers and what is in flight.
pub(super) struct Pool {
    /// One queue per worker: a directory's files go to one worker in a row, so workers
    /// create in different directories rather than queueing on one directory's lock.
    jobs: Vec<Sender<Job>>,
    /// The worker of the last file, and its parent directory.
    last: Option<(usize, Arc<OwnedFd>)>,
    done: Receiver<Finished>,
    abort: Arc<AtomicBool>,
    pending: VecDeque<Pending>,
    finished: HashMap<u64, Finished>,
    /// Paths (in-root keys) of the files in flight.
    in_flight: HashSet<Vec<u8>>,
    bytes: usize,
    next_seq: u64,
    max_jobs: usize,
    /// Over the limits: committing until half of them is in flight.
    draining: bool,
    /// Runs of one parent directory in `pending`.
    parent_runs: usize,
}

impl Pool {
    /// `workers` threads in `scope`; they stop once the pool is dropped.
    pub(super) fn start<'scope>(scope: &'scope Scope<'scope, '_>, workers: usize) -> Pool {
        let (done_tx, done_rx) = mpsc::channel::<Finished>();
        let abort = Arc::new(AtomicBool::new(false));
        let mut jobs = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
            let (tx, abort) = (done_tx.clone(), abort.clone());
            scope.spawn(move || work(&jobs_rx, &tx, &abort));
            jobs.push(jobs_tx);
        }
        Pool {
            jobs,
            last: None,
            done: done_rx,
            abort,
            pending: VecDeque::new(),
            finished: HashMap::new(),
            in_flight: HashSet::new(),
            bytes: 0,
            next_seq: 0,
            max_jobs: workers * JOBS_PER_WORKER,
            draining: false,
            parent_runs: 0,
        }
    }

    fn is_idle(&self) -> bool {
        self.pending.is_empty()
    }

    /// Queue an entry in stream order, counting the runs of one parent directory: each run
    /// may hold a directory descriptor the caches have let go.
    fn push(&mut self, p: Pending) {
        if self
            .pending
            .back()
            .is_none_or(|b| !Arc::ptr_eq(&b.parent.fd, &p.parent.fd))
        {
            self.parent_runs += 1;
        }
        self.pending.push_back(p);
    }

    fn pop(&mut self) -> Option<Pending> {
        let p = self.pending.pop_front()?;
        if self
            .pending
            .front()
            .is_none_or(|f| !Arc::ptr_eq(&f.parent.fd, &p.parent.fd))
        {
            self.parent_runs -= 1;
        }
        Some(p)
    }

    /// Past a limit: files (and so memory) or directory descriptors in flight.
    fn over_limits(&self) -> bool {
        self.pending.len() > self.max_jobs
            || self.bytes > BYTES_MAX
            || self.parent_runs > PARENT_RUNS_MAX
    }

    fn under_half(&self) -> bool {
        self.pending.len() <= self.max_jobs / 2
            && self.bytes <= BYTES_MAX / 2
            && self.parent_runs <= PARENT_RUNS_MAX / 2
    }

    /// Wait for the result of `seq` (or any result, stored until its turn).
    fn wait_for(&mut self, seq: u64) -> Result<Finished> {
        loop {
            if let Some(f) = self.finished.remove(&seq) {
                return Ok(f);
            }
            let f = self
                .done
                .recv()
                .map_err(|_| Error::Internal("unpack workers stopped".into()))?;
            self.finished.insert(f.seq, f);
        }
    }

    /// Move the results that are in into `finished`, without waiting.
    fn collect(&mut self) {
        while let Ok(f) = self.done.try_recv() {
            self.finished.insert(f.seq, f);
        }
    }
}

/// A worker: files, one after another, until the pool is dropped.
fn work(jobs: &Receiver<Job>, done: &Sender<Finished>, abort: &AtomicBool) {
    loop {
        let Ok(job) = jobs.recv() else { return };
        let outcome = if abort.load(Ordering::Acquire) {
            Outcome::Skipped
        } else {
            make_file(&job)
        };
        let finished = Finished {
            seq: job.seq,
            outcome,
            data: job.data,
        };
        if done.send(finished).is_err() {
            return;
        }
    }
}

/// Today's steps for a regular file (create, data, lchown, xattrs, chmod, times), stopping at
/// the first that fails, as containerd's `createTarFile` does.
fn make_file(job: &Job) -> Outcome {
    let fd = match rfs::openat(
        &*job.parent,
        job.base.as_slice(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        job.mode,
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::EXIST) => return Outcome::Exists,
        Err(e) => {
            return Outcome::Failed {
                created: false,
                step: Step::Create,
                err: errno(e),
            }
        }
    };
    let fail = |step, err| Outcome::Failed {
        created: true,
        step,
        err,
    };
    let mut data = job.data.as_slice();
    while !data.is_empty() {
        match rustix::io::write(&fd, data) {
            Ok(0) => return fail(Step::Write, io::Error::from(io::ErrorKind::WriteZero)),
            Ok(k) => data = &data[k..],
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return fail(Step::Write, errno(e)),
        }
    }
    if let Some((uid, gid)) = job.owner {
        match rfs::fchown(&fd, uid, gid) {
            Ok(()) => {}
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::PERM) if job.ignore_chown_errors => {}
            Err(e) => return fail(Step::Lchown, errno(e)),
        }
    }
    for (key, value) in &job.xattrs {
        // A regular file: the EPERM exception of `set_entry_xattrs` (user.* on special files)
        // never applies.
        match rfs::fsetxattr(&fd, key.as_slice(), value, rfs::XattrFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOTSUP) => {}
            Err(e) => return fail(Step::Xattr(key.clone()), errno(e)),
        }
    }
    if let Err(e) = rfs::fchmod(&fd, job.mode) {
        return fail(Step::Chmod, errno(e));
    }
    if let Err(e) = rfs::futimens(&fd, &job.times) {
        return fail(Step::Times, errno(e));
    }
    Outcome::Done
}

impl Unpacker<'_> {
    /// Hand `hdr` to the workers if it is a file that may go there, or say how it is to be
    /// unpacked here.
    pub(super) fn offload<R: BufRead>(
        &mut self,
        tr: &mut TarReader<R>,
        hdr: EntryHeader,
    ) -> Result<Next> {
        let Some(pool) = &self.pool else {
            return Ok(Next::Here(hdr, None));
        };
        let fresh_kind = matches!(hdr.typeflag, TYPE_DIR | TYPE_SYMLINK | TYPE_FIFO);
        if fresh_kind && !pool.is_idle() {
            return self.fresh(hdr);
        }
        if !matches!(hdr.typeflag, TYPE_REG | TYPE_REGA) || hdr.size > JOB_DATA_MAX as i64 {
            self.settle()?;
            return Ok(Next::Here(hdr, None));
        }
        let name = clean(&hdr.name);
        let (dir, base) = split(&name);
        if matches!(base, b"" | b"." | b"..") || base.starts_with(WHITEOUT_PREFIX) {
            self.settle()?;
            return Ok(Next::Here(hdr, None));
        }
        let (dir, base) = (dir.to_vec(), base.to_vec());
        if !self.parent_ready(&dir, &base) {
            self.settle()?;
        }
        // With files in flight this only reads the caches (parent_ready); otherwise it may
        // resolve and make parents, as today.
        let parent = self.parent_dir(&dir)?;
        self.check_path_len(&parent.comps, &base)?;
        let rp = self.root_path;
        let show = || display_at(rp, &parent.comps, &base);
        // Where today's code would fail after the file exists, or refuse it: here.
        let owner = match self.host_owner(&hdr, &show) {
            Ok(o) => o,
            Err(_) => {
                self.settle()?;
                return Ok(Next::Here(hdr, None));
            }
        };
        let rootless =
            self.opts.whiteouts == WhiteoutMode::Overlay && self.overlay_ns == OverlayXattrs::User;
        let mut xattrs = Vec::new();
        for (k, v) in &hdr.pax {
            let Some(key) = k.strip_prefix(XATTR_PREFIX) else {
                continue;
            };
            if is_refused_xattr(key) {
                if rootless {
                    self.settle()?;
                    return Ok(Next::Here(hdr, None));
                }
                continue;
            }
            xattrs.push((key.to_vec(), v.clone()));
        }

        let mut data = Vec::with_capacity(hdr.size.max(0) as usize);
        loop {
            let read = tr.read_chunk(|chunk| {
                data.extend_from_slice(chunk);
                Ok(())
            });
            match read {
                Ok(0) => break,
                Ok(_) if data.len() <= JOB_DATA_MAX => {}
                // More than its size said (a sparse file's holes): made here, from what was
                // read on.
                Ok(_) => {
                    self.settle()?;
                    return Ok(Next::Here(hdr, Some(Prefix { data, error: None })));
                }
                Err(e) => {
                    self.settle()?;
                    return Ok(Next::Here(
                        hdr,
                        Some(Prefix {
                            data,
                            error: Some(e),
                        }),
                    ));
                }
            }
        }

        let key = key_join(&crate::resolve::join_comps(&parent.comps), &base);
        self.unpacked.insert(&key);
        let cost = data.len()
            + hdr.name.len()
            + hdr
                .pax
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
            + 256;
        let (uid, gid) = owner;
        let job = Job {
            seq: 0,
            parent: parent.fd.clone(),
            base: base.clone(),
            mode: Mode::from_raw_mode((hdr.mode & 0o7777) as u32),
            data,
            owner: self
                .opts
                .same_owner
                .then(|| (uid.map(rfs::Uid::from_raw), gid.map(rfs::Gid::from_raw))),
            ignore_chown_errors: self.opts.ignore_chown_errors,
            xattrs,
            times: entry_times(&hdr),
        };
        let pool = self.pool.as_mut().expect("checked above");
        let seq = pool.next_seq;
        pool.next_seq += 1;
        pool.in_flight.insert(key.clone());
        pool.bytes += cost;
        pool.push(Pending {
            seq,
            parent,
            base,
            kind: Kind::File {
                key,
                hdr: Box::new(hdr),
                cost,
            },
        });
        let worker = match &pool.last {
            Some((w, fd)) if Arc::ptr_eq(fd, &job.parent) => *w,
            Some((w, _)) => (w + 1) % pool.jobs.len(),
            None => 0,
        };
        pool.last = Some((worker, job.parent.clone()));
        let sent = pool.jobs[worker].send(Job { seq, ..job }).is_ok();
        if !sent {
            return Err(Error::Internal("unpack workers stopped".into()));
        }
        // Commit what is done; wait while too much is in flight.
        self.commit_ready(false)?;
        Ok(Next::Taken)
    }

    /// A directory, symlink or FIFO while files are in flight: made here at once if its
    /// parent is ready and its name is free (nothing to replace, nothing in flight there),
    /// else once everything before it is committed.
    fn fresh(&mut self, hdr: EntryHeader) -> Result<Next> {
        let name = clean(&hdr.name);
        let (dir, base) = split(&name);
        if matches!(base, b"" | b"." | b"..")
            || base.starts_with(WHITEOUT_PREFIX)
            || !self.parent_ready(dir, base)
        {
            self.settle()?;
            return Ok(Next::Here(hdr, None));
        }
        let (dir, base) = (dir.to_vec(), base.to_vec());
        let parent = self.parent_dir(&dir)?;
        match rfs::statat(
            parent.fd.as_fd(),
            base.as_slice(),
            AtFlags::SYMLINK_NOFOLLOW,
        ) {
            Err(rustix::io::Errno::NOENT) => Ok(Next::Fresh(hdr, parent, base)),
            _ => {
                self.settle()?;
                Ok(Next::Here(hdr, None))
            }
        }
    }

    /// A [`Next::Fresh`] entry was made: it is undone if a file before it fails.
    pub(super) fn made_fresh(&mut self, parent: ParentDir, base: Vec<u8>, dir: bool) -> Result<()> {
        if let Some(pool) = self.pool.as_mut() {
            let seq = pool.next_seq;
            pool.next_seq += 1;
            pool.push(Pending {
                seq,
                parent,
                base,
                kind: Kind::Made { dir },
            });
        }
        // Bounded like the files: wait while too much is in flight.
        self.commit_ready(false)
    }

    /// A [`Next::Fresh`] entry failed with `e`: if a file before it failed too, that error is
    /// the one, and this entry (made after it) is undone.
    pub(super) fn fresh_failed(
        &mut self,
        e: Error,
        parent: ParentDir,
        base: Vec<u8>,
        dir: bool,
    ) -> Error {
        match self.settle() {
            Ok(()) => e,
            Err(first) => {
                undo(&parent, &base, dir);
                first
            }
        }
    }

    /// Whether a file `dir`/`base` may be handed out while files are in flight: its parent
    /// resolves from the symlink-free cache to a directory open in the cache, and neither its
    /// path nor a parent of it is in flight.
    fn parent_ready(&self, dir: &[u8], base: &[u8]) -> bool {
        let Some(pool) = &self.pool else { return false };
        let Some(joined) = self.resolved.get(cache_key(dir)) else {
            return false;
        };
        if pool.is_idle() {
            return true;
        }
        if !joined.is_empty() && !self.dir_fds.contains_key(joined) {
            return false;
        }
        let parents_free = joined
            .iter()
            .enumerate()
            .filter(|&(_, &b)| b == b'/')
            .all(|(i, _)| !pool.in_flight.contains(&joined[..i]));
        parents_free
            && (joined.is_empty() || !pool.in_flight.contains(joined.as_slice()))
            && !pool.in_flight.contains(&key_join(joined, base))
    }

    /// Commit every file in flight, in stream order: afterwards the tree is what a
    /// one-thread apply leaves after the entries read so far (or the first error is
    /// returned, and nothing after it is in the tree).
    pub(super) fn settle(&mut self) -> Result<()> {
        self.commit_ready(true)
    }

    /// On a failure of the entry being read: the files in flight before it are committed
    /// first, and an error among them is the one to report.
    pub(super) fn settle_error(&mut self, e: Error) -> Error {
        match self.settle() {
            Ok(()) => e,
            Err(first) => first,
        }
    }

    /// Commit results in order: all of them (`all`), else those that are in, waiting only
    /// while more than the limits are in flight.
    fn commit_ready(&mut self, all: bool) -> Result<()> {
        loop {
            let Some(pool) = self.pool.as_mut() else {
                return Ok(());
            };
            let Some(front) = pool.pending.front() else {
                return Ok(());
            };
            let seq = front.seq;
            let finished = if matches!(front.kind, Kind::File { .. }) {
                pool.collect();
                // Past the limits, wait until half is done: one wake-up per many files, not
                // one per file.
                if pool.over_limits() {
                    pool.draining = true;
                } else if pool.under_half() {
                    pool.draining = false;
                }
                let must_wait = all || pool.draining;
                if !must_wait && !pool.finished.contains_key(&seq) {
                    return Ok(());
                }
                Some(pool.wait_for(seq)?)
            } else {
                None
            };
            let p = pool.pop().expect("front exists");
            let (Kind::File { key, hdr, cost }, Some(f)) = (p.kind, finished) else {
                // Made here already.
                continue;
            };
            pool.in_flight.remove(&key);
            pool.bytes -= cost;
            if let Err(e) = self.commit(&p.parent, &p.base, &hdr, f) {
                self.abort_in_flight();
                return Err(e);
            }
        }
    }

    /// The result of one file, in its turn.
    fn commit(
        &mut self,
        parent: &ParentDir,
        base: &[u8],
        hdr: &EntryHeader,
        f: Finished,
    ) -> Result<()> {
        let rp = self.root_path;
        let show = || display_at(rp, &parent.comps, base);
        match f.outcome {
            Outcome::Done => Ok(()),
            Outcome::Exists => {
                // Today's path: replace what is there, then make the file here.
                let pfd = parent.fd.as_fd();
                let mode = Mode::from_raw_mode((hdr.mode & 0o7777) as u32);
                let fd = self.create_file(pfd, base, mode, &show)?;
                write_all(&fd, &f.data, &show)?;
                self.set_metadata(pfd, base, &Node::Fd(fd), hdr, &show)
            }
            Outcome::Failed { step, err, .. } => Err(step_error(step, hdr, show(), err)),
            Outcome::Skipped => Err(Error::Internal(
                "an unpack worker skipped a file before any failure".into(),
            )),
        }
    }

    /// After a failure: wait for every file still in flight, then undo, last first, what
    /// the workers and [`Next::Fresh`] made after it, so nothing after the failing entry
    /// stays in the tree.
    fn abort_in_flight(&mut self) {
        let Some(pool) = self.pool.as_mut() else {
            return;
        };
        pool.abort.store(true, Ordering::Release);
        let mut made = Vec::new();
        while let Some(p) = pool.pop() {
            let dir = match p.kind {
                Kind::Made { dir } => dir,
                Kind::File { .. } => match pool.wait_for(p.seq) {
                    Ok(Finished {
                        outcome: Outcome::Done | Outcome::Failed { created: true, .. },
                        ..
                    }) => false,
                    Ok(_) => continue,
                    // The workers are gone: nothing more of theirs will appear.
                    Err(_) => break,
                },
            };
            made.push((p.parent, p.base, dir));
        }
        for (parent, base, dir) in made.iter().rev() {
            undo(parent, base, *dir);
        }
        pool.in_flight.clear();
        pool.finished.clear();
        pool.bytes = 0;
    }
}

/// Remove an entry made at a fresh name (so it is the one made), best effort: the apply is
/// failing with an earlier error already.
fn undo(parent: &ParentDir, base: &[u8], dir: bool) {
    let flags = if dir {
        AtFlags::REMOVEDIR
    } else {
        AtFlags::empty()
    };
    let _ = rfs::unlinkat(parent.fd.as_fd(), base, flags);
}

/// Data of a file read before it was decided to make it on the unpacker's thread, and the
/// read error that ended it, if any.
pub(super) struct Prefix {
    pub(super) data: Vec<u8>,
    pub(super) error: Option<Error>,
}

/// Write all of `data` to `fd` (retrying EINTR), the step containerd's `createTarFile` does with
/// `copyBuffered`: the unpacker and the workers write a file's data with it.
pub(super) fn write_all(fd: &OwnedFd, mut data: &[u8], show: &dyn Fn() -> PathBuf) -> Result<()> {
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
}

/// The error today's code gives for `step` (see `create_file`, `copy_data`, `set_metadata`).
fn step_error(step: Step, hdr: &EntryHeader, path: PathBuf, err: io::Error) -> Error {
    match step {
        Step::Create => Error::path("create", path, err),
        Step::Write => Error::path("write", path, err),
        Step::Lchown => Error::path_detail(
            "lchown",
            path,
            format!("(uid {}, gid {})", hdr.uid, hdr.gid),
            err,
        ),
        Step::Xattr(key) => Error::path_detail(
            "set xattr on",
            path,
            format!("(key {})", String::from_utf8_lossy(&key)),
            err,
        ),
        Step::Chmod => Error::path("chmod", path, err),
        Step::Times => Error::path("set times of", path, err),
    }
}

/// The number of unpack workers `requested` means (0: the default, from
/// `LAYERDIFF_UNPACK_THREADS` if set, else 1: on the 2-core machine it was measured on, more
/// threads gained 1.15x at best and lost when other jobs ran, docs/parallel-unpack.md).
pub(super) fn threads(requested: usize) -> usize {
    if requested != 0 {
        return requested.min(64);
    }
    if let Some(n) = std::env::var("LAYERDIFF_UNPACK_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
    {
        return n.min(64);
    }
    1
}
