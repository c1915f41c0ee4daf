//! Cancellation and progress: the two hooks a long-running compare or apply offers its caller.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::error::{Error, Result};

/// A cancellation flag shared between the caller (any thread) and a running operation, which
/// checks it between entries and inside long copies.
#[derive(Clone, Default, Debug)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }

    /// Ask every operation holding this token to stop; they return [`Error::Canceled`].
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_canceled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// `Err(Canceled)` once cancelled.
    pub fn check(&self) -> Result<()> {
        if self.is_canceled() {
            Err(Error::Canceled)
        } else {
            Ok(())
        }
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
