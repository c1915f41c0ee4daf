//! The error object of the C ABI and the panic guard around every entry point.

use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::{Error, ErrorKind};

// The C constants are literals so that cbindgen can print them; these assertions keep them
// equal to the core's stable `ErrorKind` numbers.
const _: () = {
    assert!(LAYERDIFF_ERROR_INVALID_ARGUMENT == ErrorKind::InvalidArgument as u32);
    assert!(LAYERDIFF_ERROR_NOT_FOUND == ErrorKind::NotFound as u32);
    assert!(LAYERDIFF_ERROR_NOT_IMPLEMENTED == ErrorKind::NotImplemented as u32);
    assert!(LAYERDIFF_ERROR_INVALID_ARCHIVE == ErrorKind::InvalidArchive as u32);
    assert!(LAYERDIFF_ERROR_CANCELED == ErrorKind::Canceled as u32);
    assert!(LAYERDIFF_ERROR_IO == ErrorKind::Io as u32);
    assert!(LAYERDIFF_ERROR_INTERNAL == ErrorKind::Internal as u32);
};

/// A bad argument or option.
pub const LAYERDIFF_ERROR_INVALID_ARGUMENT: u32 = 1;
/// A path that should exist does not.
pub const LAYERDIFF_ERROR_NOT_FOUND: u32 = 2;
/// A feature or format that is not supported.
pub const LAYERDIFF_ERROR_NOT_IMPLEMENTED: u32 = 3;
/// The layer stream is malformed or hostile.
pub const LAYERDIFF_ERROR_INVALID_ARCHIVE: u32 = 4;
/// The call was cancelled through its layerdiff_cancel handle.
pub const LAYERDIFF_ERROR_CANCELED: u32 = 5;
/// An I/O or system call failed (see layerdiff_error_errno()).
pub const LAYERDIFF_ERROR_IO: u32 = 6;
/// A bug in layerdiff (a broken invariant), caught and reported instead of crashing.
pub const LAYERDIFF_ERROR_INTERNAL: u32 = 7;

/// An opaque error returned by a failed layerdiff call: a kind (LAYERDIFF_ERROR_*), an errno
/// (0 when no system call failed) and a message holding the whole cause chain. The caller owns
/// it and releases it with layerdiff_error_free(). It never changes, so any number of threads
/// may read it at once.
#[allow(non_camel_case_types)]
#[derive(Debug)]
pub struct layerdiff_error {
    pub(crate) kind: ErrorKind,
    pub(crate) errno: i32,
    pub(crate) message: CString,
}

impl layerdiff_error {
    pub(crate) fn new(kind: ErrorKind, errno: i32, message: impl Into<String>) -> Self {
        // A message may quote bytes of a path or archive; a NUL would cut it short in C.
        let message = message.into().replace('\0', "\\0");
        let message = CString::new(message).expect("NUL bytes were replaced");
        layerdiff_error {
            kind,
            errno,
            message,
        }
    }

    /// An INVALID_ARGUMENT error worded like the core's ("invalid argument: ...").
    pub(crate) fn invalid_argument(message: impl Into<String>) -> Self {
        Error::InvalidArgument(message.into()).into()
    }

    pub(crate) fn into_raw(self) -> *mut layerdiff_error {
        Box::into_raw(Box::new(self))
    }
}

impl From<Error> for layerdiff_error {
    fn from(e: Error) -> Self {
        layerdiff_error::new(e.kind(), e.errno().unwrap_or(0), e.chain_message())
    }
}

/// The text of a panic payload (`panic!` with a literal or a formatted message).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "unknown panic payload"
    }
}

/// Run the body of a fallible entry point: its error, or a panic turned into an INTERNAL
/// error, becomes a heap error object; success becomes NULL.
pub(crate) fn guard_call(
    function: &str,
    body: impl FnOnce() -> Result<(), layerdiff_error>,
) -> *mut layerdiff_error {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => std::ptr::null_mut(),
        Ok(Err(e)) => e.into_raw(),
        Err(payload) => layerdiff_error::new(
            ErrorKind::Internal,
            0,
            format!(
                "internal error: panic in {function}: {}",
                panic_message(&*payload)
            ),
        )
        .into_raw(),
    }
}

/// Run the body of an infallible entry point; a panic (a bug) yields `fallback` instead of
/// unwinding into C.
pub(crate) fn guard_value<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(fallback)
}

/// The kind of `err` (one of LAYERDIFF_ERROR_*), or 0 when `err` is NULL. `err` is NULL or an
/// error returned by layerdiff and not yet freed. Thread-safe: several threads may read one
/// error at once, but not while another frees it.
#[doc = c_contract!()]
#[no_mangle]
pub unsafe extern "C" fn layerdiff_error_kind(err: *const layerdiff_error) -> u32 {
    // SAFETY: the caller passes NULL or a live error object.
    guard_value(0, || unsafe { err.as_ref() }.map_or(0, |e| e.kind as u32))
}

/// The errno of the failed system call behind `err`, or 0 when there is none or `err` is NULL.
/// `err` as for layerdiff_error_kind(); thread-safe like it.
#[doc = c_contract!()]
#[no_mangle]
pub unsafe extern "C" fn layerdiff_error_errno(err: *const layerdiff_error) -> i32 {
    // SAFETY: the caller passes NULL or a live error object.
    guard_value(0, || unsafe { err.as_ref() }.map_or(0, |e| e.errno))
}

/// The message of `err`: the whole cause chain, `outer: inner: ...`, NUL-terminated, never
/// NULL ("" when `err` is NULL). The string belongs to `err`: do not free it; it stays valid
/// until layerdiff_error_free(err). `err` as for layerdiff_error_kind(); thread-safe like it.
#[doc = c_contract!()]
#[no_mangle]
pub unsafe extern "C" fn layerdiff_error_message(err: *const layerdiff_error) -> *const c_char {
    const EMPTY: &std::ffi::CStr = c"";
    // SAFETY: the caller passes NULL or a live error object.
    guard_value(EMPTY.as_ptr(), || {
        unsafe { err.as_ref() }.map_or(EMPTY.as_ptr(), |e| e.message.as_ptr())
    })
}

/// Release an error returned by layerdiff, once, when no other thread still reads it. NULL is
/// ignored. Neither the error nor the string from layerdiff_error_message() may be used
/// afterwards.
#[doc = c_contract!()]
#[no_mangle]
pub unsafe extern "C" fn layerdiff_error_free(err: *mut layerdiff_error) {
    if !err.is_null() {
        // SAFETY: `err` came from Box::into_raw in `into_raw` and is freed once, by contract.
        guard_value((), || drop(unsafe { Box::from_raw(err) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(err: *mut layerdiff_error) -> (u32, i32, String) {
        assert!(!err.is_null());
        // SAFETY: a live error from guard_call, freed once here.
        unsafe {
            let message = std::ffi::CStr::from_ptr(layerdiff_error_message(err))
                .to_string_lossy()
                .into_owned();
            let taken = (
                layerdiff_error_kind(err),
                layerdiff_error_errno(err),
                message,
            );
            layerdiff_error_free(err);
            taken
        }
    }

    #[test]
    fn a_panic_becomes_an_internal_error() {
        let err = guard_call("layerdiff_test", || panic!("broken invariant {}", 42));
        let (kind, errno, message) = take(err);
        assert_eq!(kind, LAYERDIFF_ERROR_INTERNAL);
        assert_eq!(errno, 0);
        assert_eq!(
            message,
            "internal error: panic in layerdiff_test: broken invariant 42"
        );
        assert_eq!(guard_value(7, || panic!("static message")), 7);
    }

    #[test]
    fn success_is_null() {
        assert!(guard_call("layerdiff_test", || Ok(())).is_null());
    }

    #[test]
    fn core_errors_keep_kind_errno_and_the_whole_chain() {
        let missing = std::path::Path::new("/nonexistent-layerdiff-capi-test/root");
        let core = crate::apply(missing, std::io::empty(), &crate::ApplyOptions::default())
            .expect_err("applied onto a missing root");
        let expected = core.chain_message();
        let err = guard_call("layerdiff_test", || Err(core.into()));
        let (kind, errno, message) = take(err);
        assert_eq!(kind, LAYERDIFF_ERROR_NOT_FOUND);
        assert_eq!(errno, libc::ENOENT);
        assert_eq!(message, expected);
        assert!(message.contains(&*missing.to_string_lossy()), "{message}");
    }

    #[test]
    fn nul_bytes_in_messages_are_escaped() {
        let err = layerdiff_error::invalid_argument("name\0with nul").into_raw();
        let (_, _, message) = take(err);
        assert_eq!(message, "invalid argument: name\\0with nul");
    }
}
