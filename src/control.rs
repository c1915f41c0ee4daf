//! Cancellation and progress: the two hooks a long-running compare or apply offers its caller.

use std::fmt;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use rustix::event::{EventfdFlags, PollFd, PollFlags};

use crate::error::{Error, Result};

/// A cancellation flag shared between the caller (any thread) and a running operation, which
/// checks it between entries and inside long copies. Reads and writes through a
/// [`CancellableFd`] also wait on it, so a stalled pipe does not delay a cancel.
#[derive(Clone, Default, Debug)]
pub struct CancelToken(Arc<TokenState>);

#[derive(Default, Debug)]
struct TokenState {
    canceled: AtomicBool,
    // An eventfd made on the first wait on a descriptor; `cancel` makes it readable, which
    // wakes every poll(2) waiting on it.
    waker: OnceLock<io::Result<OwnedFd>>,
    // The live tokens made by `child`, cancelled with this one. Weak, so a child (and its
    // eventfd) goes when its last holder drops it; dead entries are pruned as children come.
    children: Mutex<Vec<Weak<TokenState>>>,
    // Made by `for_call`: the operation given it cancels it itself when it fails.
    stops_on_failure: bool,
}

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }

    /// A token cancelled when this one is (at once if it already is), or on its own, which
    /// leaves this one alone. Any number of children may live at once, from any threads.
    pub fn child(&self) -> Self {
        Self::child_of(Some(self), false)
    }

    /// A token for one compare or apply: cancelled when `parent` is (if any), and by the
    /// operation itself when it fails, so that a read or write through a [`CancellableFd`]
    /// holding it, stalled on a peer that neither writes nor closes, returns at once and the
    /// operation reports its own error instead of waiting for the peer (containerd closes its
    /// reader). `parent` is never cancelled by this. Give it to one operation only.
    pub fn for_call(parent: Option<&CancelToken>) -> Self {
        Self::child_of(parent, true)
    }

    fn child_of(parent: Option<&CancelToken>, stops_on_failure: bool) -> Self {
        let child = CancelToken(Arc::new(TokenState {
            stops_on_failure,
            ..TokenState::default()
        }));
        let Some(parent) = parent else { return child };
        let parent_canceled = {
            let mut children = lock(&parent.0.children);
            children.retain(|c| c.strong_count() > 0);
            children.push(Arc::downgrade(&child.0));
            // Read under the lock: a `cancel` either finds the child in the list or set its
            // flag before we took the lock.
            parent.is_canceled()
        };
        if parent_canceled {
            child.cancel();
        }
        child
    }

    /// Ask every operation holding this token (or a child of it) to stop; they return
    /// [`Error::Canceled`].
    pub fn cancel(&self) {
        // SeqCst pairs with `waker`: a waiter either sees the flag or is woken by the write.
        self.0.canceled.store(true, Ordering::SeqCst);
        if let Some(Ok(fd)) = self.0.waker.get() {
            // An eventfd write only fails when the counter would overflow: it is readable then.
            let _ = rustix::io::write(fd, &1u64.to_ne_bytes());
        }
        // Cancelled outside the lock, so a child's own `cancel` never waits on ours.
        let children: Vec<_> = lock(&self.0.children)
            .drain(..)
            .filter_map(|c| c.upgrade())
            .collect();
        for c in children {
            CancelToken(c).cancel();
        }
    }

    pub fn is_canceled(&self) -> bool {
        self.0.canceled.load(Ordering::SeqCst)
    }

    /// `Err(Canceled)` once cancelled.
    pub fn check(&self) -> Result<()> {
        if self.is_canceled() {
            Err(Error::Canceled)
        } else {
            Ok(())
        }
    }

    fn waker(&self) -> io::Result<BorrowedFd<'_>> {
        match self.0.waker.get_or_init(|| {
            rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
                .map_err(crate::sys::errno)
        }) {
            Ok(fd) => Ok(fd.as_fd()),
            Err(e) => Err(io::Error::new(e.kind(), format!("create eventfd: {e}"))),
        }
    }

    /// Wait until `fd` is ready for `events` or the token fires (then `Err(Canceled)`).
    fn wait_for(&self, fd: BorrowedFd<'_>, events: PollFlags) -> io::Result<()> {
        let waker = self.waker()?;
        loop {
            // Checked after the waker exists, so a cancel before it was made is not missed.
            if self.is_canceled() {
                return Err(canceled());
            }
            let mut fds = [PollFd::new(&fd, events), PollFd::new(&waker, PollFlags::IN)];
            match rustix::event::poll(&mut fds, None) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(crate::sys::errno(e)),
            }
            if self.is_canceled() {
                return Err(canceled());
            }
            // Readiness, hang-up or an error: the read or write reports which.
            if !fds[0].revents().is_empty() {
                return Ok(());
            }
        }
    }
}

/// A poisoned lock only means a thread panicked while pushing or draining the list, which
/// leaves it whole.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Called by compare and apply when they fail, before they wait for their threads: cancels a
/// token made by [`CancelToken::for_call`], so that a thread blocked on a stalled descriptor
/// through a [`CancellableFd`] returns now. The caller's own tokens are left alone.
pub(crate) fn stop_call(cancel: Option<&CancelToken>) {
    if let Some(t) = cancel.filter(|t| t.0.stops_on_failure) {
        t.cancel();
    }
}

/// Canceled as an `io::Error` of a kind std's `write_all`/`read_exact` do not retry
/// (`Interrupted` they would, forever).
fn canceled() -> io::Error {
    io::Error::other(Error::Canceled)
}

/// A file descriptor whose reads and writes first wait, with poll(2), until it is ready or
/// the token fires: a read from a pipe no one writes, or a write to one no one reads, returns
/// [`Error::Canceled`] as soon as the operation is cancelled instead of blocking until the
/// peer acts. (A generic `Read` or `Write` cannot be interrupted; descriptors can.)
#[derive(Debug)]
pub struct CancellableFd {
    fd: OwnedFd,
    cancel: CancelToken,
    // Regular files and block devices are always ready (poll says so): no wait, no cap.
    may_block: bool,
    // Writes try pwritev2(RWF_NOWAIT) first (pipes since Linux 6.4, sockets): whole buffers,
    // no poll, and EAGAIN only when full. Off once the kernel refuses it for this descriptor.
    nowait: bool,
}

/// A write to a pipe of at most this many bytes, once poll(2) reports it writable, cannot
/// block (POLLOUT on a pipe means at least PIPE_BUF bytes free).
const PIPE_BUF: usize = 4096;

impl CancellableFd {
    pub fn new(fd: impl Into<OwnedFd>, cancel: CancelToken) -> Self {
        let fd = fd.into();
        let may_block = rustix::fs::fstat(&fd).map_or(true, |st| {
            let kind = rustix::fs::FileType::from_raw_mode(st.st_mode);
            !matches!(
                kind,
                rustix::fs::FileType::RegularFile | rustix::fs::FileType::BlockDevice
            )
        });
        CancellableFd {
            fd,
            cancel,
            may_block,
            nowait: may_block,
        }
    }
}

impl Read for CancellableFd {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.may_block {
                self.cancel.wait_for(self.fd.as_fd(), PollFlags::IN)?;
            }
            match rustix::io::read(&self.fd, &mut *buf) {
                // A caller's O_NONBLOCK descriptor another reader drained first: wait again.
                Err(rustix::io::Errno::AGAIN) if self.may_block => continue,
                r => return r.map_err(crate::sys::errno),
            }
        }
    }
}

impl Write for CancellableFd {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        while self.nowait {
            // Offset -1: at the file position, as write(2).
            let bufs = [io::IoSlice::new(buf)];
            let flags = rustix::io::ReadWriteFlags::NOWAIT;
            match rustix::io::pwritev2(&self.fd, &bufs, u64::MAX, flags) {
                Err(rustix::io::Errno::AGAIN) => {
                    self.cancel.wait_for(self.fd.as_fd(), PollFlags::OUT)?
                }
                // Not supported here (an older kernel, a terminal, a seccomp filter): poll
                // and capped writes below.
                Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::NOSYS) => self.nowait = false,
                Err(rustix::io::Errno::INVAL) => self.nowait = false,
                r => return r.map_err(crate::sys::errno),
            }
        }
        loop {
            let mut n = buf.len();
            if self.may_block {
                self.cancel.wait_for(self.fd.as_fd(), PollFlags::OUT)?;
                n = n.min(PIPE_BUF);
            }
            match rustix::io::write(&self.fd, &buf[..n]) {
                Err(rustix::io::Errno::AGAIN) if self.may_block => continue,
                r => return r.map_err(crate::sys::errno),
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A progress callback, called with a running byte count (compare: uncompressed tar bytes
/// written; apply: input bytes consumed, as containerd reports). May be called from a worker
/// thread. It also carries a count of entries (apply: tar entries read; compare: changes
/// written), which callbacks made with [`Progress::with_entries`] receive.
#[derive(Clone)]
pub struct Progress {
    report: Arc<dyn Fn(u64, u64) + Send + Sync>,
    entries: Arc<AtomicU64>,
}

impl Progress {
    pub fn new(f: impl Fn(u64) + Send + Sync + 'static) -> Self {
        Self::with_entries(move |bytes, _| f(bytes))
    }

    /// A callback given (bytes, entries so far).
    pub fn with_entries(f: impl Fn(u64, u64) + Send + Sync + 'static) -> Self {
        Progress {
            report: Arc::new(f),
            entries: Arc::default(),
        }
    }

    pub fn report(&self, bytes: u64) {
        (self.report)(bytes, self.entries.load(Ordering::Relaxed))
    }

    /// Count one more entry; the next `report` passes the new count on. One relaxed atomic
    /// add, so it can sit in the per-entry loop.
    pub fn count_entry(&self) {
        self.entries.fetch_add(1, Ordering::Relaxed);
    }
}

impl fmt::Debug for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Progress(..)")
    }
}

/// Check an optional token.
pub(crate) fn check(cancel: Option<&CancelToken>) -> Result<()> {
    cancel.map_or(Ok(()), CancelToken::check)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write to a pipe or socket no one reads returns Canceled on cancel, with RWF_NOWAIT
    /// writes and without (the path of kernels before 6.4 for pipes, and of terminals).
    #[test]
    fn stalled_writes_wake_on_cancel_with_and_without_nowait() {
        for nowait in [true, false] {
            for socket in [false, true] {
                let (rd, wr): (OwnedFd, OwnedFd) = if socket {
                    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
                    (a.into(), b.into())
                } else {
                    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap()
                };
                let token = CancelToken::for_call(None);
                let mut out = CancellableFd::new(wr, token.clone());
                out.nowait &= nowait;
                let t = token.clone();
                let canceller = std::thread::spawn(move || {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    t.cancel();
                });
                let err = out.write_all(&vec![0u8; 8 << 20]).unwrap_err();
                canceller.join().unwrap();
                let what = format!("nowait {nowait}, socket {socket}: {err}");
                assert!(err.to_string().contains("cancel"), "{what}");
                assert_eq!(out.nowait, nowait, "{what}: RWF_NOWAIT support changed");
                drop(rd);
            }
        }
    }

    /// A stop_call cancels a per-call token, never a plain one or its parent.
    #[test]
    fn stop_call_cancels_only_per_call_tokens() {
        let caller = CancelToken::new();
        let child = caller.child();
        stop_call(Some(&caller));
        stop_call(Some(&child));
        assert!(!caller.is_canceled() && !child.is_canceled());
        let call = CancelToken::for_call(Some(&caller));
        stop_call(Some(&call));
        assert!(call.is_canceled() && !caller.is_canceled());
        // The parent's list keeps no dead entries once children come and go: `child`,
        // `call`, and the last one dropped (pruned when the next one comes).
        for _ in 0..100 {
            drop(caller.child());
        }
        assert_eq!(lock(&caller.0.children).len(), 3);
    }
}
