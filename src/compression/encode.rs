//! Output side: the writer threads of compare. The producer hands over the tar in chunks of
//! [`GZIP_CHUNK`] bytes; plain and zstd output is encoded in order on one thread, gzip on
//! worker threads, one chunk each (pigz-style: each chunk but the last ends with a sync flush,
//! so that they concatenate into one deflate stream), and a writer thread puts the compressed
//! chunks back in order between a gzip header and trailer.

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
    /// The last bytes of the previous chunk (ISA-L's dictionary, see [`wants_dictionary`]);
    /// empty otherwise.
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

/// Whether the chunks of `compression` carry the previous chunk's tail as dictionary: ISA-L's
/// do; libdeflate's deflate (gzip) takes none, its chunks are independent.
pub(crate) fn wants_dictionary(compression: Compression) -> bool {
    matches!(compression, Compression::GzipIsal { .. })
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
                deflate_chunk::deflate_chunk(level, &job.data, job.last, &mut bytes)
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

/// Size of the chunks compare hands to the encoders. gzip's are deflated independently
/// (libdeflate takes no dictionary), so a chunk pays for its first 32 KiB finding no earlier
/// matches: at 1 MiB that costs 0.2% of size on a GOROOT layer (65.96 MB against 65.84 MB as
/// one buffer), with 2 to 8 workers 6 to 12 chunks in flight (`compare::run_pipeline`).
pub(crate) const GZIP_CHUNK: usize = 1024 * 1024;
/// Deflate's window: ISA-L's chunks are compressed with the previous chunk's tail as
/// dictionary.
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    type DeflateChunk = fn(u32, &[u8], &[u8], bool, &mut Vec<u8>) -> io::Result<()>;

    /// The gzip engine's chunk deflater, which takes no dictionary, in ISA-L's signature.
    fn libdeflate_chunk(
        level: u32,
        _dict: &[u8],
        data: &[u8],
        last: bool,
        out: &mut Vec<u8>,
    ) -> io::Result<()> {
        deflate_chunk::deflate_chunk(level, data, last, out)
    }

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

    /// Chunks compressed independently by libdeflate and concatenated form one gzip member
    /// that flate2 and our decoder read back, at every level, for chunks that end a deflate
    /// block on any bit (many sizes), incompressible data, and empty chunks.
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
        // The middle is incompressible (stored blocks end chunks there).
        for b in &mut data[300_000..400_000] {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            *b = (x >> 24) as u8;
        }
        let check = |level: u32, chunks: &[&[u8]]| {
            let gz = chunked_member(libdeflate_chunk, level, chunks);
            let want: Vec<u8> = chunks.concat();
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&gz[..])
                .read_to_end(&mut back)
                .unwrap();
            assert!(back == want, "level {level}: flate2 reads other data back");
            let mut ours = Vec::new();
            super::super::isal::gzip_decoder(&gz[..])
                .read_to_end(&mut ours)
                .unwrap();
            assert!(
                ours == want,
                "level {level}: our decoder reads other data back"
            );
        };
        for level in deflate_chunk::LEVELS {
            check(level, &data.chunks(GZIP_CHUNK / 4).collect::<Vec<_>>());
            check(level, &[&data[..], b""]);
            check(level, &[b"", b"x", b"", &data[..5000]]);
        }
        // Chunk sizes 1..=64 end their last block at every bit offset in a byte.
        for level in [1, 6, 9] {
            for len in 1..=64 {
                let chunks: Vec<&[u8]> = data[..20 * len].chunks(len).collect();
                check(level, &chunks);
            }
        }
        let mut out = Vec::new();
        let e = deflate_chunk::deflate_chunk(10, b"data", true, &mut out).unwrap_err();
        assert!(e.to_string().contains("not in 0..=9"), "{e}");
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
        deflate_chunk::deflate_chunk(6, b"hello", false, &mut buf).unwrap();
        out.extend_from_slice(&buf);
        deflate_chunk::deflate_chunk(6, b"", true, &mut buf).unwrap();
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
