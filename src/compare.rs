//! Compare: two directory trees in, one OCI layer stream out.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use sha2::{Digest as _, Sha256};

use crate::compression::{self, Compression, DEFLATE_WINDOW, GZIP_CHUNK};
use crate::control::{CancelToken, Progress};
use crate::digest::{format_sha256, DigestWriter};
use crate::error::{Error, Result};
use crate::layer::{ChangeWriter, TarSink};
use crate::walk;

/// Options of [`compare`]. The default is gzip at level 6, no epoch, no hooks.
#[derive(Debug, Clone, Default)]
pub struct CompareOptions {
    pub compression: Compression,
    /// SOURCE_DATE_EPOCH in seconds: later mtimes are clamped to it (whiteouts keep 0).
    pub source_date_epoch: Option<i64>,
    pub cancel: Option<CancelToken>,
    /// Called with the number of uncompressed tar bytes produced so far.
    pub progress: Option<Progress>,
}

/// What [`compare`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diff {
    /// OCI media type of the written stream (depends on the compression).
    pub media_type: &'static str,
    /// `sha256:...` of the bytes written to the output.
    pub digest: String,
    /// Number of bytes written to the output.
    pub size: u64,
    /// `sha256:...` of the uncompressed tar (the diffID).
    pub diff_id: String,
    /// Size of the uncompressed tar.
    pub uncompressed_size: u64,
}

/// Walk `lower` and `upper`, and write to `out` the layer that turns lower into upper,
/// byte-identical (uncompressed) to containerd's `archive.WriteDiff`.
///
/// The walk and tar production run on the calling thread; compression and writing run on
/// worker threads fed through bounded channels of fixed-size chunks, so memory stays at a few
/// MiB whatever the size of the trees (plus one set entry per emitted directory and hardlinked
/// inode, as containerd keeps).
pub fn compare<W: Write + Send>(
    lower: &Path,
    upper: &Path,
    out: W,
    opts: &CompareOptions,
) -> Result<Diff> {
    opts.compression.validate()?;
    crate::control::check(opts.cancel.as_ref())?;
    let produce = |sink: &mut ChunkSink| -> Result<()> {
        let mut cw = ChangeWriter::new(
            &mut *sink,
            upper,
            opts.source_date_epoch,
            opts.cancel.as_ref(),
        );
        walk::changes(lower, upper, opts.cancel.as_ref(), |kind, path, meta| {
            if let Some(p) = &opts.progress {
                p.count_entry();
            }
            cw.handle_change(kind, path, meta)
        })?;
        cw.finish()?;
        Ok(())
    };
    let (tar_digest, tar_size, out_digest, out_size) =
        run_pipeline(out, opts.compression, opts.progress.as_ref(), produce)?;
    Ok(Diff {
        media_type: opts.compression.media_type(),
        digest: out_digest,
        size: out_size,
        diff_id: tar_digest,
        uncompressed_size: tar_size,
    })
}

/// A chunk of the uncompressed tar on its way to the encoder.
struct Chunk {
    seq: u64,
    /// The last bytes of the previous chunk (gzip dictionary); empty otherwise.
    dict: Vec<u8>,
    data: Vec<u8>,
    last: bool,
}

/// A chunk after compression (gzip workers), to be written in sequence.
struct Compressed {
    seq: u64,
    bytes: Vec<u8>,
    crc: flate2::Crc,
    data: Vec<u8>,
    last: bool,
}

/// The producer's end of the pipeline: fills fixed-size buffers, hashes the tar (diffID),
/// reports progress, and hands full buffers on.
pub(crate) struct ChunkSink<'p> {
    /// GZIP_CHUNK bytes long (files are read straight into it); `filled` of them are tar.
    buf: Vec<u8>,
    filled: usize,
    seq: u64,
    want_dict: bool,
    prev_tail: Vec<u8>,
    tx: SyncSender<Chunk>,
    free: Receiver<Vec<u8>>,
    hasher: Sha256,
    count: u64,
    progress: Option<&'p Progress>,
}

/// The producer stopped because the consumer side went away; its own error says why.
fn consumer_gone() -> Error {
    Error::Internal("layer writer stopped".into())
}

impl ChunkSink<'_> {
    fn send(&mut self, last: bool) -> Result<()> {
        let next = if last {
            Vec::new()
        } else {
            let mut b = self.free.recv().map_err(|_| consumer_gone())?;
            // Recycled buffers were full chunks: this only zero-fills a new one, once.
            b.resize(GZIP_CHUNK, 0);
            b
        };
        let mut data = std::mem::replace(&mut self.buf, next);
        data.truncate(self.filled);
        self.filled = 0;
        self.hasher.update(&data);
        self.count += data.len() as u64;
        // Only the last chunk is short, so the previous chunk's tail is the whole window.
        let dict = if self.want_dict {
            let tail = data[data.len().saturating_sub(DEFLATE_WINDOW)..].to_vec();
            std::mem::replace(&mut self.prev_tail, tail)
        } else {
            Vec::new()
        };
        self.tx
            .send(Chunk {
                seq: self.seq,
                dict,
                data,
                last,
            })
            .map_err(|_| consumer_gone())?;
        self.seq += 1;
        if let Some(p) = self.progress {
            p.report(self.count);
        }
        Ok(())
    }
}

impl TarSink for &mut ChunkSink<'_> {
    fn write_tar(&mut self, mut bytes: &[u8]) -> Result<()> {
        while !bytes.is_empty() {
            let room = self.spare();
            let n = room.len().min(bytes.len());
            room[..n].copy_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            self.commit_spare(n)?;
        }
        Ok(())
    }

    fn spare(&mut self) -> &mut [u8] {
        &mut self.buf[self.filled..]
    }

    fn commit_spare(&mut self, n: usize) -> Result<()> {
        self.filled += n;
        if self.filled == self.buf.len() {
            self.send(false)?;
        }
        Ok(())
    }
}

/// Run `produce` (the tar producer) on this thread and the encoder/writer on others; return
/// (tar digest, tar size, output digest, output size).
fn run_pipeline<W: Write + Send>(
    out: W,
    compression: Compression,
    progress: Option<&Progress>,
    produce: impl FnOnce(&mut ChunkSink) -> Result<()>,
) -> Result<(String, u64, String, u64)> {
    let workers = match compression {
        Compression::Gzip { .. } => std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 8),
        _ => 0,
    };
    let in_flight = 2 * workers + 4;
    let (chunk_tx, chunk_rx) = sync_channel::<Chunk>(in_flight);
    let (free_tx, free_rx) = sync_channel::<Vec<u8>>(in_flight + 1);
    for _ in 0..in_flight {
        free_tx
            .send(Vec::with_capacity(GZIP_CHUNK))
            .expect("pool has room");
    }
    let mut sink = ChunkSink {
        buf: vec![0; GZIP_CHUNK],
        filled: 0,
        seq: 0,
        want_dict: workers > 0,
        prev_tail: Vec::new(),
        tx: chunk_tx,
        free: free_rx,
        hasher: Sha256::new(),
        count: 0,
        progress,
    };

    std::thread::scope(|scope| {
        let writer = match compression {
            Compression::Gzip { level } => {
                let (done_tx, done_rx) = sync_channel::<Compressed>(in_flight);
                // Shared by the workers; dropped (unblocking the producer) when all have left.
                let jobs = Arc::new(Mutex::new(chunk_rx));
                for _ in 0..workers {
                    let done_tx = done_tx.clone();
                    let jobs = Arc::clone(&jobs);
                    scope.spawn(move || gzip_worker(&jobs, done_tx, level));
                }
                drop((done_tx, jobs));
                scope.spawn(move || write_gzip(out, done_rx, free_tx, level))
            }
            other => scope.spawn(move || write_in_order(out, chunk_rx, free_tx, other)),
        };
        let produced = produce(&mut sink).and_then(|()| sink.send(true));
        let ChunkSink {
            hasher,
            count,
            tx,
            free,
            ..
        } = sink;
        drop(tx);
        drop(free);
        let written = writer
            .join()
            .map_err(|_| Error::Internal("layer writer panicked".into()))?;
        match (produced, written) {
            // The consumer's error explains why the producer could not hand on its chunks.
            (Err(_), Err(e)) if !matches!(e, Error::Internal(_)) => Err(e),
            (Err(e), _) => Err(e),
            (Ok(()), Err(e)) => Err(e),
            (Ok(()), Ok((digest, size))) => {
                let tar_digest = format_sha256(&hasher.finalize());
                let digest = digest.unwrap_or_else(|| tar_digest.clone());
                Ok((tar_digest, count, digest, size))
            }
        }
    })
}

fn output_error(e: std::io::Error) -> Error {
    Error::io("write layer", e)
}

fn aborted() -> Error {
    Error::Internal("layer pipeline stopped early (compression failed)".into())
}

/// None and zstd: encode chunks in order on this thread. Returns the output digest (None when
/// it equals the tar's) and size.
fn write_in_order<W: Write>(
    out: W,
    chunks: Receiver<Chunk>,
    free: SyncSender<Vec<u8>>,
    compression: Compression,
) -> Result<(Option<String>, u64)> {
    match compression {
        Compression::None => {
            let mut out = out;
            let mut size = 0u64;
            loop {
                let chunk = chunks.recv().map_err(|_| aborted())?;
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
                let chunk = chunks.recv().map_err(|_| aborted())?;
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
        Compression::Gzip { .. } => Err(Error::Internal("gzip goes through workers".into())),
    }
}

fn gzip_worker(jobs: &Mutex<Receiver<Chunk>>, done: SyncSender<Compressed>, level: u32) {
    loop {
        let job = {
            let Ok(rx) = jobs.lock() else { return };
            match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        let mut bytes = Vec::new();
        if compression::deflate_chunk(level, &job.dict, &job.data, job.last, &mut bytes).is_err() {
            // Dropping `done` makes the writer report the stream as broken.
            return;
        }
        let mut crc = flate2::Crc::new();
        crc.update(&job.data);
        let result = Compressed {
            seq: job.seq,
            bytes,
            crc,
            data: job.data,
            last: job.last,
        };
        if done.send(result).is_err() {
            return;
        }
    }
}

/// Gzip: write the header, then the workers' chunks in sequence, then the trailer.
fn write_gzip<W: Write>(
    out: W,
    done: Receiver<Compressed>,
    free: SyncSender<Vec<u8>>,
    level: u32,
) -> Result<(Option<String>, u64)> {
    let mut out = DigestWriter::new(out);
    out.write_all(&compression::gzip_header(level))
        .map_err(output_error)?;
    let mut crc = flate2::Crc::new();
    let mut pending: BTreeMap<u64, Compressed> = BTreeMap::new();
    let mut next = 0u64;
    loop {
        let c = done.recv().map_err(|_| aborted())?;
        pending.insert(c.seq, c);
        while let Some(c) = pending.remove(&next) {
            out.write_all(&c.bytes).map_err(output_error)?;
            crc.combine(&c.crc);
            next += 1;
            if c.last {
                out.write_all(&compression::gzip_trailer(&crc))
                    .map_err(output_error)?;
                out.flush().map_err(output_error)?;
                let (digest, size, _) = out.finish();
                return Ok((Some(digest), size));
            }
            let _ = free.send(c.data);
        }
    }
}
