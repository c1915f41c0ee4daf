//! One error type for the whole core. Its kinds map onto containerd's errdefs and onto the
//! stable error codes of the C ABI.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

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
    /// A failed system call or I/O on a path; `context` says what was being done, as a
    /// lowercase verb phrase whose object is the path ("open", "set times of", "lchown"),
    /// never "failed to ...", which the error itself says; `detail`
    /// (when there is one) what else the call was given: the target of a link, the owner
    /// asked for, the xattr being set.
    #[error("{context} {}{}: {source}", PathDisplay(path), DetailDisplay(detail))]
    Path {
        context: &'static str,
        path: PathBuf,
        detail: Option<String>,
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

/// Shows a path as it is when it is printable UTF-8, else quoted as Go's `%q` quotes it:
/// names come from the layer, and a newline or a terminal escape in one must not break the
/// message's one line (containerd quotes entry names with `%q`).
struct PathDisplay<'a>(&'a Path);

impl std::fmt::Display for PathDisplay<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::os::unix::ffi::OsStrExt;
        let bytes = self.0.as_os_str().as_bytes();
        match std::str::from_utf8(bytes) {
            Ok(s) if !s.chars().any(char::is_control) => f.write_str(s),
            _ => f.write_str(&go_quote(bytes)),
        }
    }
}

/// Go's `strconv.Quote` of a byte string (`%q`), control and non-UTF-8 bytes escaped.
pub(crate) fn go_quote(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\u{7}' => out.push_str("\\a"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{b}' => out.push_str("\\v"),
                c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                    out.push_str(&format!("\\x{:02x}", c as u32))
                }
                c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out.push('"');
    out
}

/// Shows a path's detail after it, space-separated.
struct DetailDisplay<'a>(&'a Option<String>);

impl std::fmt::Display for DetailDisplay<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(d) => write!(f, " {d}"),
            None => Ok(()),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error on `path` while doing `context` (e.g. "lstat", "open", "read").
    pub fn path(context: &'static str, path: impl AsRef<Path>, source: io::Error) -> Self {
        Error::Path {
            context,
            path: path.as_ref().to_path_buf(),
            detail: None,
            source,
        }
    }

    /// An I/O error on `path` while doing `context`, with what else the call was given.
    pub fn path_detail(
        context: &'static str,
        path: impl AsRef<Path>,
        detail: String,
        source: io::Error,
    ) -> Self {
        Error::Path {
            context,
            path: path.as_ref().to_path_buf(),
            detail: Some(detail),
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
    if is_canceled(e) {
        return ErrorKind::Canceled;
    }
    match e.kind() {
        io::ErrorKind::NotFound => ErrorKind::NotFound,
        io::ErrorKind::InvalidInput => ErrorKind::InvalidArgument,
        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof => ErrorKind::InvalidArchive,
        _ => ErrorKind::Io,
    }
}

impl Error {
    /// This error inside an `io::Error`, to pass where only that type can (a `Read` between
    /// two pipeline stages); [`Error::from_io`] takes it out again unchanged.
    /// Always of kind `Other`: std's readers retry `Interrupted` (a cancel must stop them).
    pub(crate) fn into_io(self) -> io::Error {
        io::Error::other(self)
    }

    /// An `io::Error` from reading a stream: the [`Error`] it carries if it came from
    /// [`Error::into_io`], else an I/O error while doing `context`.
    pub(crate) fn from_io(context: &'static str, e: io::Error) -> Error {
        if e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
            return match e.into_inner().map(|inner| inner.downcast::<Error>()) {
                Some(Ok(inner)) => *inner,
                _ => Error::Internal("an error passed between threads was lost".into()),
            };
        }
        Error::io(context, e)
    }
}

/// Whether `e` carries [`Error::Canceled`] (a cancel token fired inside a reader).
pub(crate) fn is_canceled(e: &io::Error) -> bool {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<Error>())
        .is_some_and(|inner| matches!(inner, Error::Canceled))
}

/// The first error of a pipeline whose stages run on several threads. A stage records its own
/// failure here before it drops its ends of the channels; a stage that stops because a channel
/// closed under it returns [`Error::stage_stopped`], which it may record too, but only after the
/// stage that closed the channel recorded its cause. So what is recorded first is the cause,
/// never its consequence, and no stage has to tell the two apart.
#[derive(Default)]
pub(crate) struct FirstError(Mutex<Option<Error>>);

impl FirstError {
    /// Keep `e` unless an error was recorded before.
    pub(crate) fn record(&self, e: Error) {
        let mut first = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        first.get_or_insert(e);
    }

    pub(crate) fn into_inner(self) -> Option<Error> {
        self.0.into_inner().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Error {
    /// What a pipeline stage returns when `peer` closed a channel under it. The peer recorded
    /// its own error first (see [`FirstError`]), so this one is only reported if it did not,
    /// which would be a bug.
    pub(crate) fn stage_stopped(peer: &str) -> Error {
        Error::Internal(format!("{peer} stopped without recording an error"))
    }
}

#[cfg(test)]
mod quote_tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn layer_names_in_messages_stay_on_one_line() {
        let e = Error::path(
            "open",
            Path::new(std::ffi::OsStr::from_bytes(b"/r/a\nb\x1b[2J\xff\"q")),
            io::Error::from_raw_os_error(libc::ENOENT),
        );
        assert_eq!(
            e.to_string(),
            r#"open "/r/a\nb\x1b[2J\xff\"q": No such file or directory (os error 2)"#
        );
        let plain = Error::path("open", "/r/ä b", io::Error::from_raw_os_error(libc::ENOENT));
        assert_eq!(
            plain.to_string(),
            "open /r/ä b: No such file or directory (os error 2)"
        );
    }
}
