//! Output side: the writer threads of compare. The producer hands over the tar in chunks of
//! [`GZIP_CHUNK`] bytes; plain and zstd output is encoded in order on one thread, gzip on
//! worker threads, one chunk each (pigz-style, with the previous chunk's tail as dictionary),
//! and a writer thread puts the compressed chunks back in order between a gzip header and
//! trailer.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::{Scope, ScopedJoinHandle};

use super::Compression;
use crate::digest::DigestWriter;
use crate::error::{Error, FirstError, Result};

/// A chunk of the uncompressed tar on its way to the encoder.
pub(crate) struct Chunk {
    pub(crate) seq: u64,
    /// The last bytes of the previous chunk (gzip dictionary); empty otherwise.
    pub(crate) dict: Vec<u8>,
    pub(crate) data: Vec<u8>,
    pub(crate) last: bool,
}

/// A chunk after compression (gzip workers), to be written in sequence.
struct Compressed {
    seq: u64,
    bytes: Vec<u8>,
    crc: flate2::Crc,
    data: Vec<u8>,
    last: bool,
}

/// What the output writer returns: the output digest (`None` when it is the tar's own) and
/// size.
pub(crate) type Written = (Option<String>, u64);

/// How many gzip workers `compression` gets: `requested` (tests), else one per CPU, up to 8;
/// none for plain and zstd, whose encoders run on the writer thread (zstd has its own
/// worker threads).
pub(crate) fn workers(compression: Compression, requested: Option<usize>) -> usize {
    match compression {
        Compression::Gzip { .. } | Compression::GzipIsal { .. } => requested
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .clamp(1, 8),
        _ => 0,
    }
}

/// Start the threads that encode `chunks` as `compression` says and write them to `out`;
/// each chunk's buffer goes back on `free` once written. A thread that fails records its error
/// in `errors` before it drops its channels, so the producer, finding them closed, stops
/// without its own error being the one reported. The handle gives what was written, or
/// `None` after a failure.
pub(crate) fn spawn_writer<'scope, W: Write + Send + 'scope>(
    scope: &'scope Scope<'scope, '_>,
    out: W,
    chunks: Receiver<Chunk>,
    free: SyncSender<Vec<u8>>,
    compression: Compression,
    workers: usize,
    errors: &'scope FirstError,
) -> ScopedJoinHandle<'scope, Option<Written>> {
    match compression {
        Compression::Gzip { .. } | Compression::GzipIsal { .. } => {
            // ISA-L's header says "fastest compression" (XFL 4), as zlib's level 1 does.
            let header_level = match compression {
                Compression::Gzip { level } => level,
                _ => 1,
            };
            let (done_tx, done_rx) = sync_channel::<Result<Compressed>>(2 * workers + 4);
            // Shared by the workers; dropped (unblocking the producer) when all have left.
            let jobs = Arc::new(Mutex::new(chunks));
            for _ in 0..workers {
                let done_tx = done_tx.clone();
                let jobs = Arc::clone(&jobs);
                scope.spawn(move || gzip_worker(&jobs, done_tx, compression));
            }
            drop((done_tx, jobs));
            scope.spawn(move || {
                write_gzip(out, &done_rx, &free, header_level)
                    .map_err(|e| errors.record(e))
                    .ok()
            })
        }
        other => scope.spawn(move || {
            write_in_order(out, &chunks, &free, other)
                .map_err(|e| errors.record(e))
                .ok()
        }),
    }
}

fn output_error(e: io::Error) -> Error {
    Error::io("write layer", e)
}

/// None and zstd: encode chunks in order on this thread.
fn write_in_order<W: Write>(
    out: W,
    chunks: &Receiver<Chunk>,
    free: &SyncSender<Vec<u8>>,
    compression: Compression,
) -> Result<Written> {
    match compression {
        Compression::None => {
            let mut out = out;
            let mut size = 0u64;
            loop {
                let chunk = chunks
                    .recv()
                    .map_err(|_| Error::stage_stopped("layer producer"))?;
                out.write_all(&chunk.data).map_err(output_error)?;
                size += chunk.data.len() as u64;
                if chunk.last {
                    out.flush().map_err(output_error)?;
                    return Ok((None, size));
                }
                let _ = free.send(chunk.data);
            }
        }
        Compression::Zstd { level } => {
            let mut enc = zstd::stream::write::Encoder::new(DigestWriter::new(out), level)
                .map_err(|e| Error::io("start zstd encoder", e))?;
            enc.include_checksum(true)
                .map_err(|e| Error::io("start zstd encoder", e))?;
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
            if threads > 1 {
                enc.multithread(threads)
                    .map_err(|e| Error::io("start zstd workers", e))?;
            }
            loop {
                let chunk = chunks
                    .recv()
                    .map_err(|_| Error::stage_stopped("layer producer"))?;
                enc.write_all(&chunk.data).map_err(output_error)?;
                if chunk.last {
                    let mut dw = enc.finish().map_err(output_error)?;
                    dw.flush().map_err(output_error)?;
                    let (digest, size, _) = dw.finish();
                    return Ok((Some(digest), size));
                }
                let _ = free.send(chunk.data);
            }
        }
        Compression::Gzip { .. } | Compression::GzipIsal { .. } => {
            Err(Error::Internal("gzip goes through workers".into()))
        }
    }
}

/// A gzip worker: compress chunks until there are none; a failure goes to the writer in the
/// stream of results, which ends the pipeline.
fn gzip_worker(
    jobs: &Mutex<Receiver<Chunk>>,
    done: SyncSender<Result<Compressed>>,
    engine: Compression,
) {
    loop {
        let job = {
            let Ok(rx) = jobs.lock() else { return };
            match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        let mut bytes = Vec::new();
        let deflated = match engine {
            Compression::Gzip { level } => {
                deflate_chunk(level, &job.dict, &job.data, job.last, &mut bytes)
            }
            Compression::GzipIsal { level } => {
                super::isal::deflate_chunk(level, &job.dict, &job.data, job.last, &mut bytes)
            }
            _ => Err(io::Error::other("not a gzip compression")),
        };
        let result = match deflated {
            Ok(()) => {
                let mut crc = flate2::Crc::new();
                crc.update(&job.data);
                Ok(Compressed {
                    seq: job.seq,
                    bytes,
                    crc,
                    data: job.data,
                    last: job.last,
                })
            }
            Err(e) => Err(Error::io("compress layer", e)),
        };
        if done.send(result).is_err() {
            return;
        }
    }
}

/// Gzip: write the header, then the workers' chunks in sequence, then the trailer.
fn write_gzip<W: Write>(
    out: W,
    done: &Receiver<Result<Compressed>>,
    free: &SyncSender<Vec<u8>>,
    level: u32,
) -> Result<Written> {
    let mut out = DigestWriter::new(out);
    out.write_all(&gzip_header(level)).map_err(output_error)?;
    let mut crc = flate2::Crc::new();
    let mut pending: BTreeMap<u64, Compressed> = BTreeMap::new();
    let mut next = 0u64;
    loop {
        let c = done
            .recv()
            .map_err(|_| Error::stage_stopped("layer producer"))??;
        pending.insert(c.seq, c);
        while let Some(c) = pending.remove(&next) {
            out.write_all(&c.bytes).map_err(output_error)?;
            crc.combine(&c.crc);
            next += 1;
            if c.last {
                out.write_all(&gzip_trailer(&crc)).map_err(output_error)?;
                out.flush().map_err(output_error)?;
                let (digest, size, _) = out.finish();
                return Ok((Some(digest), size));
            }
            let _ = free.send(c.data);
        }
    }
}

/// Size of the chunks of the parallel gzip encoder. Twice pigz's 128 KiB block: each chunk
/// pays for a fresh compressor, priming it with the 32 KiB dictionary and a sync flush, and
/// at 256 KiB that overhead measured ~7% less deflate time with the same output size.
pub(crate) const GZIP_CHUNK: usize = 256 * 1024;
/// Deflate's window: each chunk is compressed with the previous chunk's tail as dictionary.
pub(crate) const DEFLATE_WINDOW: usize = 32 * 1024;

/// The 10-byte gzip header Go's `compress/gzip` writes (no name, no mtime, OS unknown).
fn gzip_header(level: u32) -> [u8; 10] {
    let xfl = match level {
        9 => 2,
        1 => 4,
        _ => 0,
    };
    [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255]
}

/// The 8-byte gzip trailer: CRC-32 and length mod 2^32 of the uncompressed data.
fn gzip_trailer(crc: &flate2::Crc) -> [u8; 8] {
    let mut t = [0u8; 8];
    t[..4].copy_from_slice(&crc.sum().to_le_bytes());
    t[4..].copy_from_slice(&crc.amount().to_le_bytes());
    t
}

/// Compress one chunk of a pigz-style parallel gzip stream: raw deflate primed with `dict`
/// (the previous 32 KiB of input), ended by a sync flush so that the chunks concatenate into
/// one deflate stream, or by the final block when `last`.
///
/// Each chunk gets a fresh compressor: a reset and reused zlib-rs `Compress` gave output that
/// depended on which chunks that worker had compressed before, so the same tree produced
/// different gzip bytes from run to run (measured: no slower than reuse).
fn deflate_chunk(
    level: u32,
    dict: &[u8],
    data: &[u8],
    last: bool,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    use flate2::{FlushCompress, Status};
    let mut compressor = flate2::Compress::new(flate2::Compression::new(level), false);
    let compressor = &mut compressor;
    if !dict.is_empty() {
        compressor.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    out.clear();
    // Room for incompressible data (stored blocks add 5 bytes per 64 KiB), so the buffer is
    // never regrown and copied.
    out.reserve(data.len() + data.len() / 1024 + 1024);
    let mut consumed = 0usize;
    loop {
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity().max(4096));
        }
        let before = compressor.total_in();
        let status = compressor
            .compress_vec(&data[consumed..], out, flush)
            .map_err(io::Error::other)?;
        consumed += (compressor.total_in() - before) as usize;
        let room_left = out.len() < out.capacity();
        match status {
            Status::StreamEnd => return Ok(()),
            _ if !last && consumed == data.len() && room_left => return Ok(()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    type DeflateChunk = fn(u32, &[u8], &[u8], bool, &mut Vec<u8>) -> io::Result<()>;

    /// `chunks` deflated one by one by `deflate` at `level`, each primed with the previous
    /// chunk's tail, between a gzip header and trailer, as the writer threads put them.
    fn chunked_member(deflate: DeflateChunk, level: u32, chunks: &[&[u8]]) -> Vec<u8> {
        let mut out = gzip_header(level).to_vec();
        let mut crc = flate2::Crc::new();
        let mut buf = Vec::new();
        for (i, chunk) in chunks.iter().enumerate() {
            let dict = if i == 0 {
                &[][..]
            } else {
                let prev = chunks[i - 1];
                &prev[prev.len().saturating_sub(DEFLATE_WINDOW)..]
            };
            deflate(level, dict, chunk, i + 1 == chunks.len(), &mut buf).unwrap();
            out.extend_from_slice(&buf);
            crc.update(chunk);
        }
        out.extend_from_slice(&gzip_trailer(&crc));
        out
    }

    /// Chunks compressed independently with their predecessor as dictionary and concatenated
    /// form one gzip member that a standard decoder reads back.
    #[test]
    fn chunked_deflate_is_one_valid_gzip_member() {
        let mut data = Vec::new();
        let mut x: u32 = 1;
        for i in 0..700_000u32 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            data.push(if i % 3 == 0 {
                (x >> 24) as u8
            } else {
                b"layer"[(i % 5) as usize]
            });
        }
        for level in [0, 1, 6, 9] {
            let chunks: Vec<&[u8]> = data.chunks(GZIP_CHUNK).collect();
            let out = chunked_member(deflate_chunk, level, &chunks);
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&out[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data, "level {level}");
        }
    }

    /// Chunks deflated by ISA-L, each primed with the previous chunk's tail, form one gzip
    /// member that flate2 and our decoder read back, at every level and for incompressible
    /// data and an empty last chunk too.
    #[test]
    fn isal_chunks_make_one_gzip_member() {
        use super::super::isal::{self, DEFLATE_LEVELS};
        if !isal::AVAILABLE {
            eprintln!("ISA-L is not built in: nothing to test");
            return;
        }
        let mut random = Vec::with_capacity(3 * GZIP_CHUNK);
        let mut x = 1u32;
        for i in 0..3 * GZIP_CHUNK {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            // Text-like, but the middle chunk incompressible.
            let random_chunk = (GZIP_CHUNK..2 * GZIP_CHUNK).contains(&i);
            random.push(if random_chunk || i % 4 == 0 {
                (x >> 23) as u8
            } else {
                b"overlay layer diff"[i % 18]
            });
        }
        for level in DEFLATE_LEVELS {
            for data in [&random[..], &random[..GZIP_CHUNK], b"x"] {
                let mut chunks: Vec<&[u8]> = data.chunks(GZIP_CHUNK).collect();
                chunks.push(b"");
                let gz = chunked_member(isal::deflate_chunk, level, &chunks);
                let mut want = Vec::new();
                flate2::read::GzDecoder::new(&gz[..])
                    .read_to_end(&mut want)
                    .unwrap();
                assert!(want == data, "level {level}: flate2 reads other data back");
                let mut ours = Vec::new();
                isal::gzip_decoder(&gz[..]).read_to_end(&mut ours).unwrap();
                assert!(
                    ours == data,
                    "level {level}: our decoder reads other data back"
                );
            }
        }
        let mut out = Vec::new();
        for level in [0, 4] {
            let e = isal::deflate_chunk(level, b"", b"data", true, &mut out).unwrap_err();
            assert!(e.to_string().contains("not in 1..=3"), "{e}");
            let e = Compression::GzipIsal { level }.validate().unwrap_err();
            assert!(e.to_string().contains("not in 1..=3"), "{e}");
        }
    }

    #[test]
    fn empty_last_chunk_still_ends_the_stream() {
        let mut out = gzip_header(6).to_vec();
        let mut buf = Vec::new();
        deflate_chunk(6, &[], b"hello", false, &mut buf).unwrap();
        out.extend_from_slice(&buf);
        deflate_chunk(6, b"hello", b"", true, &mut buf).unwrap();
        out.extend_from_slice(&buf);
        let mut crc = flate2::Crc::new();
        crc.update(b"hello");
        out.extend_from_slice(&gzip_trailer(&crc));
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&out[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, b"hello");
    }
}
