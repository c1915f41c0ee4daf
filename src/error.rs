//! One error type for the whole core. Its kinds map onto containerd's errdefs and onto the
//! stable error codes of the C ABI.

use std::io;
use std::path::{Path, PathBuf};

/// What kind of failure, stable across versions (the C ABI exposes these as numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ErrorKind {
    /// A bad argument or option (errdefs InvalidArgument).
    InvalidArgument = 1,
    /// A path that should exist does not (errdefs NotFound).
    NotFound = 2,
    /// A feature or format that is not supported (errdefs NotImplemented).
    NotImplemented = 3,
    /// The layer stream is malformed or hostile (errdefs InvalidArgument in containerd).
    InvalidArchive = 4,
    /// The caller cancelled the operation (errdefs Canceled).
    Canceled = 5,
    /// An I/O or system call failed.
    Io = 6,
    /// A bug: a panic caught at the C boundary, or a broken invariant.
    Internal = 7,
}

/// The error of every core operation: a kind, an optional errno, and a message chain.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("not implemented: {0}")]
    NotImplemented(String),
    #[error("invalid archive: {0}")]
    InvalidArchive(String),
    #[error("canceled")]
    Canceled,
    /// A failed system call or I/O on a path; `context` says what was being done.
    #[error("{context} {}: {source}", path.display())]
    Path {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A failed I/O without a path (the output stream, the input stream).
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error on `path` while doing `context` (e.g. "lstat", "open", "read").
    pub fn path(context: &'static str, path: impl AsRef<Path>, source: io::Error) -> Self {
        Error::Path {
            context,
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// An I/O error without a path.
    pub fn io(context: &'static str, source: io::Error) -> Self {
        Error::Io { context, source }
    }

    /// The stable kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Error::NotImplemented(_) => ErrorKind::NotImplemented,
            Error::InvalidArchive(_) => ErrorKind::InvalidArchive,
            Error::Canceled => ErrorKind::Canceled,
            Error::Internal(_) => ErrorKind::Internal,
            Error::Path { source, .. } | Error::Io { source, .. } => io_kind(source),
        }
    }

    /// The errno behind this error, if a system call failed.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Path { source, .. } | Error::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    /// The message of the whole cause chain, `outer: inner: ...`.
    pub fn chain_message(&self) -> String {
        // Display already includes the immediate source; walk deeper causes, skipping repeats.
        let mut msg = self.to_string();
        let mut cause = std::error::Error::source(self).and_then(std::error::Error::source);
        while let Some(c) = cause {
            let s = c.to_string();
            if !msg.ends_with(&s) {
                msg.push_str(": ");
                msg.push_str(&s);
            }
            cause = c.source();
        }
        msg
    }
}

fn io_kind(e: &io::Error) -> ErrorKind {
    match e.kind() {
        io::ErrorKind::NotFound => ErrorKind::NotFound,
        io::ErrorKind::InvalidInput => ErrorKind::InvalidArgument,
        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof => ErrorKind::InvalidArchive,
        io::ErrorKind::Interrupted if is_canceled(e) => ErrorKind::Canceled,
        _ => ErrorKind::Io,
    }
}

/// Marker carried inside an `io::Error` when a cancel token fired inside a reader or writer
/// (where only `io::Error` can travel); mapped back to [`Error::Canceled`].
#[derive(Debug)]
pub(crate) struct CanceledMarker;

impl std::fmt::Display for CanceledMarker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("canceled")
    }
}
impl std::error::Error for CanceledMarker {}

#[allow(dead_code)] // for readers/writers that see a cancel token (apply)
pub(crate) fn canceled_io() -> io::Error {
    io::Error::new(io::ErrorKind::Interrupted, CanceledMarker)
}

pub(crate) fn is_canceled(e: &io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.is::<CanceledMarker>())
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        if is_canceled(&e) {
            Error::Canceled
        } else {
            Error::io("i/o", e)
        }
    }
}
