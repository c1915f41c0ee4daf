//! Cancellation and progress: the two hooks a long-running compare or apply offers its caller.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
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
/// thread.
#[derive(Clone)]
pub struct Progress(Arc<dyn Fn(u64) + Send + Sync>);

impl Progress {
    pub fn new(f: impl Fn(u64) + Send + Sync + 'static) -> Self {
        Progress(Arc::new(f))
    }

    pub fn report(&self, bytes: u64) {
        (self.0)(bytes)
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
