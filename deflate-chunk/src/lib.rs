//! A safe interface to libdeflate's compressor for layerdiff's parallel gzip: [`deflate_chunk`]
//! compresses one chunk of a longer raw DEFLATE stream.
//!
//! layerdiff's own crate forbids `unsafe` outside its C ABI; the FFI calls live here instead.
//! libdeflate (vendored under `libdeflate/`, the compressor only) compresses a whole buffer
//! per call and keeps no state between calls, so a chunk's bytes depend only on its data and
//! the level. Its stock API always ends a stream; `libdeflate.patch` adds
//! `layerdiff_deflate_compress_chunk`, which can instead end a chunk with a sync flush so that
//! chunks concatenate into one stream, as pigz's do.

#![deny(unsafe_op_in_unsafe_fn)]

use std::cell::RefCell;
use std::ffi::{c_int, c_void};
use std::io;

#[repr(C)]
struct Compressor {
    _private: [u8; 0],
}

extern "C" {
    #[link_name = "layerdiff_libdeflate_alloc_compressor"]
    fn alloc_compressor(level: c_int) -> *mut Compressor;
    #[link_name = "layerdiff_libdeflate_free_compressor"]
    fn free_compressor(c: *mut Compressor);
    #[link_name = "layerdiff_libdeflate_deflate_compress_bound"]
    fn compress_bound(c: *mut Compressor, in_nbytes: usize) -> usize;
    fn layerdiff_deflate_compress_chunk(
        c: *mut Compressor,
        input: *const c_void,
        in_nbytes: usize,
        out: *mut c_void,
        out_nbytes_avail: usize,
        last: c_int,
    ) -> usize;
}

/// The levels of libdeflate's compressor used here: 0 (stored) to 9 (zlib's range; 10-12 are
/// its slow optimal-parsing levels).
pub const LEVELS: std::ops::RangeInclusive<u32> = 0..=9;

/// A compressor at one level, owned by one thread, and the buffer it writes into.
struct Owned {
    level: u32,
    ptr: *mut Compressor,
    /// As large as the worst case of a chunk; the output is copied out at its own size, so
    /// that the chunks waiting to be written hold no more than their bytes.
    scratch: Vec<u8>,
}

impl Drop for Owned {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from alloc_compressor and is freed once, here.
        unsafe { free_compressor(self.ptr) }
    }
}

thread_local! {
    /// Each worker thread keeps its compressor (some hundreds of KiB): libdeflate keeps no
    /// state between calls, so reuse cannot change the bytes.
    static COMPRESSOR: RefCell<Option<Owned>> = const { RefCell::new(None) };
}

/// Compress `data`, one chunk of a raw DEFLATE stream, at `level` into `out` (replacing its
/// contents): ended by the final block when `last`, else by a sync flush (an empty stored
/// block), so that the next chunk's output may follow. Chunks do not reference each other's
/// data (libdeflate takes no dictionary): the bytes depend only on `data`, `level` and `last`.
pub fn deflate_chunk(level: u32, data: &[u8], last: bool, out: &mut Vec<u8>) -> io::Result<()> {
    if !LEVELS.contains(&level) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("deflate level {level} is not in 0..=9"),
        ));
    }
    COMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        if !matches!(&*cell, Some(c) if c.level == level) {
            // Dropped (freed) before the new one is made.
            *cell = None;
            // SAFETY: plain allocation; NULL is checked below.
            let ptr = unsafe { alloc_compressor(level as c_int) };
            if ptr.is_null() {
                return Err(io::Error::new(
                    io::ErrorKind::OutOfMemory,
                    "cannot allocate a deflate compressor",
                ));
            }
            *cell = Some(Owned {
                level,
                ptr,
                scratch: Vec::new(),
            });
        }
        let Some(owned) = cell.as_mut() else {
            return Err(io::Error::other("no deflate compressor"));
        };
        // SAFETY: `owned.ptr` is a live compressor owned by this thread.
        // The sync flush adds at most 6 bytes to libdeflate's bound.
        let bound = unsafe { compress_bound(owned.ptr, data.len()) } + 8;
        if owned.scratch.len() < bound {
            owned.scratch.resize(bound, 0);
        }
        // SAFETY: `data` is read and `scratch` written, each within the lengths given, during
        // the call only; the compressor is exclusively ours (thread-local, not re-entered).
        let n = unsafe {
            layerdiff_deflate_compress_chunk(
                owned.ptr,
                data.as_ptr().cast(),
                data.len(),
                owned.scratch.as_mut_ptr().cast(),
                owned.scratch.len(),
                c_int::from(last),
            )
        };
        if n == 0 || n > owned.scratch.len() {
            // Cannot happen within the bound; reported rather than trusted.
            return Err(io::Error::other("deflate output exceeded its bound"));
        }
        out.clear();
        out.extend_from_slice(&owned.scratch[..n]);
        Ok(())
    })
}
