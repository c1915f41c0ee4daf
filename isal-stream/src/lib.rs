//! A safe streaming interface to ISA-L (igzip's inflate and deflate), for layerdiff's gzip.
//!
//! layerdiff's own crate forbids `unsafe` outside its C ABI; the FFI calls into ISA-L live
//! here instead, each over state this crate owns and buffers borrowed for the call only.
//! What is exposed is safe: [`Inflater`] inflates a gzip member's body and checks its
//! CRC-32/ISIZE trailer (the caller parses the header, with its own limits and messages), and
//! [`deflate_chunk`] writes one chunk of a pigz-style parallel gzip stream.
//!
//! The crate `isal-rs` is not used: its streaming decoder reports valid streams as corrupt
//! when two reads in one member bring no output (a short read at a buffer boundary is enough),
//! and cannot tell a truncated stream from trailing bytes.

#![cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#![deny(unsafe_op_in_unsafe_fn)]

use std::io::{self, ErrorKind};

use isal_sys::igzip_lib as ffi;

/// Why [`Inflater::inflate`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// The trailer's CRC-32 or ISIZE does not match the data.
    BadChecksum,
    /// The deflate data is invalid.
    Corrupt,
}

/// What one [`Inflater::inflate`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inflated {
    pub result: Result<(), InflateError>,
    /// Input bytes taken (ISA-L keeps what it has not decoded yet in its own state).
    pub consumed: usize,
    /// Output bytes written.
    pub written: usize,
}

/// ISA-L's inflate state for gzip member bodies (raw deflate, then the 8-byte trailer that
/// ISA-L checks), boxed so that it never moves while ISA-L may look at it.
pub struct Inflater(Box<ffi::inflate_state>);

// SAFETY: the state's raw pointers are set only for the duration of one `inflate` call (to
// buffers borrowed by it) and nulled afterwards; otherwise it is plain owned data, so moving
// it to another thread is sound.
unsafe impl Send for Inflater {}

impl Default for Inflater {
    fn default() -> Self {
        Self::new()
    }
}

impl Inflater {
    pub fn new() -> Self {
        // SAFETY: inflate_state is plain C data (integers, byte arrays, raw pointers, a union
        // of integers), for which all-zero bytes are a valid value.
        let mut state: Box<ffi::inflate_state> = Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: `state` is a valid, exclusively borrowed inflate_state.
        unsafe { ffi::isal_inflate_init(&mut *state) };
        // The body only: the caller parses the header; ISA-L checks CRC-32 and ISIZE.
        state.crc_flag = ffi::ISAL_GZIP_NO_HDR_VER;
        Inflater(state)
    }

    /// Back to the start of a member body (the body-only mode is kept).
    pub fn reset(&mut self) {
        // SAFETY: the state was initialized by isal_inflate_init.
        unsafe { ffi::isal_inflate_reset(&mut *self.0) };
    }

    /// One isal_inflate call from `input` into `out`.
    pub fn inflate(&mut self, input: &[u8], out: &mut [u8]) -> Inflated {
        let in_len = input.len().min(u32::MAX as usize);
        let out_len = out.len().min(u32::MAX as usize);
        let s = &mut *self.0;
        s.next_in = input.as_ptr().cast_mut();
        s.avail_in = in_len as u32;
        s.next_out = out.as_mut_ptr();
        s.avail_out = out_len as u32;
        // SAFETY: next_in/avail_in and next_out/avail_out describe `input` (only read) and
        // `out`, both borrowed for this call; ISA-L copies whatever it keeps (bit buffer,
        // history, partial input) into the state, and the pointers are nulled below.
        let ret = unsafe { ffi::isal_inflate(s) };
        // On some corrupt bodies ISA-L "gives back" more input than this call passed (its bit
        // buffer returned past the buffer's start: avail_in 0xFFFFFFFF): never more consumed
        // than given, and such a call is corrupt whatever it returned.
        let left = s.avail_in as usize;
        let consumed = in_len.saturating_sub(left);
        let written = out_len - s.avail_out as usize;
        s.next_in = std::ptr::null_mut();
        s.avail_in = 0;
        s.next_out = std::ptr::null_mut();
        s.avail_out = 0;
        let result = match ret {
            r if r >= 0 && left <= in_len => Ok(()),
            ffi::ISAL_INCORRECT_CHECKSUM => Err(InflateError::BadChecksum),
            _ => Err(InflateError::Corrupt),
        };
        Inflated {
            result,
            consumed,
            written,
        }
    }

    /// The member's body and trailer are done.
    pub fn finished(&self) -> bool {
        self.0.block_state == ffi::isal_block_state_ISAL_BLOCK_FINISH
    }

    /// The final block is decoded and the trailer is being read.
    pub fn in_trailer(&self) -> bool {
        matches!(
            self.0.block_state,
            ffi::isal_block_state_ISAL_BLOCK_INPUT_DONE | ffi::isal_block_state_ISAL_CHECKSUM_CHECK
        )
    }
}

/// The levels of ISA-L's deflate: 1 (fastest) to 3 (smallest).
pub const DEFLATE_LEVELS: std::ops::RangeInclusive<u32> = 1..=3;

/// A deflate state and its level buffer, kept per worker thread: allocating them per chunk
/// (some 400 KiB) cost more system time than the chunk's deflate saved.
struct DeflateScratch {
    stream: Box<ffi::isal_zstream>,
    level_buf: Vec<u8>,
}

thread_local! {
    static DEFLATE_SCRATCH: std::cell::RefCell<Option<DeflateScratch>> =
        const { std::cell::RefCell::new(None) };
}

/// Compress one chunk of a pigz-style parallel gzip stream with ISA-L's deflate at `level`:
/// raw deflate primed with `dict` (the previous 32 KiB of input), ended by a sync flush so
/// that the chunks concatenate into one deflate stream, or by the final block when `last`.
///
/// Each chunk starts from a clean state, so its bytes depend only on its data, its dictionary
/// and the level: the same whatever the number of workers. ISA-L picks its code for the CPU
/// it runs on, so another kind of CPU may write other (equally valid) bytes.
pub fn deflate_chunk(
    level: u32,
    dict: &[u8],
    data: &[u8],
    last: bool,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    let level_buf_size = match level {
        1 => ffi::ISAL_DEF_LVL1_DEFAULT,
        2 => ffi::ISAL_DEF_LVL2_DEFAULT,
        3 => ffi::ISAL_DEF_LVL3_DEFAULT,
        _ => {
            return Err(io::Error::new(
                ErrorKind::InvalidInput,
                format!("ISA-L deflate level {level} is not in 1..=3"),
            ))
        }
    };
    DEFLATE_SCRATCH.with(|cell| {
        let mut cell = cell.borrow_mut();
        let scratch = cell.get_or_insert_with(|| DeflateScratch {
            // SAFETY: isal_zstream is plain C data (integers, byte arrays, raw pointers), for
            // which all-zero bytes are a valid value.
            stream: Box::new(unsafe { std::mem::zeroed() }),
            level_buf: Vec::new(),
        });
        // A clean slate for every chunk: with a dictionary ISA-L adds to its hash table
        // without clearing it, so what an earlier chunk left there could change the bytes.
        scratch.level_buf.clear();
        scratch.level_buf.resize(level_buf_size as usize, 0);
        deflate_with(scratch, level, dict, data, last, out)
    })
}

fn deflate_with(
    scratch: &mut DeflateScratch,
    level: u32,
    dict: &[u8],
    data: &[u8],
    last: bool,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    let failed = |what: &str, ret: i32| io::Error::other(format!("ISA-L {what} failed ({ret})"));
    let stream = &mut *scratch.stream;
    // SAFETY: `stream` is a valid, exclusively borrowed isal_zstream; init resets all of its
    // state that deflate reads.
    unsafe { ffi::isal_deflate_init(stream) };
    stream.level = level;
    stream.level_buf = scratch.level_buf.as_mut_ptr();
    stream.level_buf_size = scratch.level_buf.len() as u32;
    stream.gzip_flag = ffi::IGZIP_DEFLATE as u16;
    stream.end_of_stream = u16::from(last);
    stream.flush = if last { ffi::NO_FLUSH } else { ffi::SYNC_FLUSH } as u16;
    let result = (|| {
        if !dict.is_empty() {
            let len = u32::try_from(dict.len()).map_err(io::Error::other)?;
            // SAFETY: ISA-L reads the dictionary (copying it into the state) during the
            // call, and level_buf (where it hashes it) is alive and not otherwise borrowed.
            let ret = unsafe { ffi::isal_deflate_set_dict(stream, dict.as_ptr().cast_mut(), len) };
            if ret != ffi::COMP_OK as i32 {
                return Err(failed("set dictionary", ret));
            }
        }
        // Room for incompressible data (stored blocks add 5 bytes per 64 KiB) and the flush,
        // so that one call does it all; more is added if ever needed.
        out.clear();
        out.resize(data.len() + data.len() / 1024 + 1024, 0);
        let (mut consumed, mut written) = (0usize, 0usize);
        loop {
            let input = &data[consumed..];
            let room = &mut out[written..];
            let in_len = input.len().min(u32::MAX as usize);
            let out_len = room.len().min(u32::MAX as usize);
            stream.next_in = input.as_ptr().cast_mut();
            stream.avail_in = in_len as u32;
            stream.next_out = room.as_mut_ptr();
            stream.avail_out = out_len as u32;
            // SAFETY: next_in/avail_in and next_out/avail_out describe `input` (only read)
            // and `room`, borrowed for this call, and level_buf is alive and not otherwise
            // borrowed; ISA-L copies what it keeps of the input into the state.
            let ret = unsafe { ffi::isal_deflate(stream) };
            consumed += in_len - stream.avail_in as usize;
            written += out_len - stream.avail_out as usize;
            if ret != ffi::COMP_OK as i32 {
                return Err(failed("deflate", ret));
            }
            let done = if last {
                stream.internal_state.state == ffi::isal_zstate_state_ZSTATE_END
            } else {
                // All input taken with output room left: the sync flush is written too.
                consumed == data.len() && stream.avail_out > 0
            };
            if done {
                out.truncate(written);
                return Ok(());
            }
            if stream.avail_out == 0 {
                let grown = out.len() * 2;
                out.resize(grown, 0);
            }
        }
    })();
    // Nothing is left pointing at buffers that are about to be reused or freed.
    stream.next_in = std::ptr::null_mut();
    stream.next_out = std::ptr::null_mut();
    stream.level_buf = std::ptr::null_mut();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A member body (after its 10-byte header) found by the cargo-fuzz tar_reader target:
    /// ISA-L fails it and hands back more input than this call gave it (avail_in 0xFFFFFFFF),
    /// which wrapped the consumed count.
    #[test]
    fn consumed_never_exceeds_the_input() {
        let member = b"\x1f\x8b\x08\x01\x00\x00\x1a\x01\x00\x4e\x82\x88\x01\x1f\x8b\x08\x1f\x8b\x00\x08\x00\x00\x00\x0f\xff\xff";
        let body = &member[10..];
        let mut out = vec![0u8; 1 << 16];
        for step in 1..=body.len() {
            let mut inflater = Inflater::new();
            let mut pos = 0;
            let mut failed = false;
            while pos < body.len() {
                let input = &body[pos..(pos + step).min(body.len())];
                let r = inflater.inflate(input, &mut out);
                assert!(
                    r.consumed <= input.len(),
                    "step {step}: consumed {} of {}",
                    r.consumed,
                    input.len()
                );
                if r.result.is_err() {
                    failed = true;
                    break;
                }
                if r.consumed == 0 && r.written == 0 {
                    break;
                }
                pos += r.consumed;
            }
            assert!(
                failed || !inflater.finished(),
                "step {step}: a corrupt body decoded"
            );
        }
    }
}
