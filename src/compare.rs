//! Compare: two directory trees in, one OCI layer stream out. The walk ([`crate::walk`]) and
//! the change writer ([`crate::change_writer`]) run on the calling thread and fill chunks; the
//! encoder threads ([`crate::compression::encode`]) compress and write them.

use std::io::Write;
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use sha2::{Digest as _, Sha256};

use crate::change_writer::{ChangeWriter, TarSink};
use crate::compression::encode::{self, Chunk, DEFLATE_WINDOW, GZIP_CHUNK};
use crate::compression::Compression;
use crate::control::{CancelToken, Progress};
use crate::digest::format_sha256;
use crate::error::{Error, FirstError, Result};
use crate::idmap::IdMaps;
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
    /// Map the owners on disk (host IDs) to the IDs written in the headers (container IDs);
    /// the default (empty maps) writes them unchanged, as containerd.
    pub id_maps: IdMaps,
    /// Carry every xattr the kernel lets us read (overlay's own `trusted.overlay.*` and
    /// `user.overlay.*` excepted) as `SCHILY.xattr.*` records, not only `security.capability`.
    pub all_xattrs: bool,
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
    write_layer(upper, out, opts, |handle| {
        walk::changes(lower, upper, opts.cancel.as_ref(), handle)
    })
}

/// Run a change source (`changes`, which calls its argument for every change in walk order)
/// through the change writer, reading entries and parents from `upper`, into `out`.
pub(crate) fn write_layer<W: Write + Send>(
    upper: &Path,
    out: W,
    opts: &CompareOptions,
    changes: impl FnOnce(&mut dyn FnMut(walk::Change) -> Result<()>) -> Result<()>,
) -> Result<Diff> {
    write_layer_with_workers(upper, out, opts, None, changes)
}

/// [`write_layer`] with `workers` gzip threads (None: one per CPU, up to 8), so that tests can
/// show the bytes do not depend on it.
fn write_layer_with_workers<W: Write + Send>(
    upper: &Path,
    out: W,
    opts: &CompareOptions,
    workers: Option<usize>,
    changes: impl FnOnce(&mut dyn FnMut(walk::Change) -> Result<()>) -> Result<()>,
) -> Result<Diff> {
    opts.compression.validate()?;
    crate::control::check(opts.cancel.as_ref())?;
    let produce = |sink: &mut ChunkSink| -> Result<()> {
        let mut cw = ChangeWriter::new(
            &mut *sink,
            upper,
            opts.source_date_epoch,
            opts.cancel.as_ref(),
        )?
        .with_header_options(opts.id_maps.clone(), opts.all_xattrs);
        changes(&mut |c| {
            if let Some(p) = &opts.progress {
                p.count_entry();
            }
            cw.handle_change(c)
        })?;
        cw.finish()?;
        Ok(())
    };
    let (tar_digest, tar_size, out_digest, out_size) = run_pipeline(
        out,
        opts.compression,
        workers,
        opts.progress.as_ref(),
        opts.cancel.as_ref(),
        produce,
    )?;
    Ok(Diff {
        media_type: opts.compression.media_type(),
        digest: out_digest,
        size: out_size,
        diff_id: tar_digest,
        uncompressed_size: tar_size,
    })
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

impl ChunkSink<'_> {
    fn send(&mut self, last: bool) -> Result<()> {
        let next = if last {
            Vec::new()
        } else {
            let mut b = self
                .free
                .recv()
                .map_err(|_| Error::stage_stopped("layer writer"))?;
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
            .map_err(|_| Error::stage_stopped("layer writer"))?;
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

    /// Up to the next [`PROGRESS_STEP`] boundary of the chunk, so that a big file's copy
    /// reports progress several times per chunk.
    fn spare(&mut self) -> &mut [u8] {
        let end = (self.filled / PROGRESS_STEP + 1) * PROGRESS_STEP;
        let end = end.min(self.buf.len());
        &mut self.buf[self.filled..end]
    }

    fn commit_spare(&mut self, n: usize) -> Result<()> {
        self.filled += n;
        if self.filled == self.buf.len() {
            self.send(false)?;
        } else if n > 0 && self.filled.is_multiple_of(PROGRESS_STEP) {
            if let Some(p) = self.progress {
                p.report(self.count + self.filled as u64);
            }
        }
        Ok(())
    }
}

/// How often, in tar bytes within a chunk, a file's copy reports progress (chunks are
/// [`GZIP_CHUNK`], larger than this).
const PROGRESS_STEP: usize = 256 * 1024;

/// Run `produce` (the tar producer) on this thread and the encoder/writer on others; return
/// (tar digest, tar size, output digest, output size).
fn run_pipeline<W: Write + Send>(
    out: W,
    compression: Compression,
    workers: Option<usize>,
    progress: Option<&Progress>,
    cancel: Option<&CancelToken>,
    produce: impl FnOnce(&mut ChunkSink) -> Result<()>,
) -> Result<(String, u64, String, u64)> {
    let workers = encode::workers(compression, workers);
    // Chunks in flight: one per worker, and a few more so that the producer and the workers
    // do not wait on each other (each is GZIP_CHUNK, so memory grows with this).
    let in_flight = workers + 4;
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
        want_dict: encode::wants_dictionary(compression),
        prev_tail: Vec::new(),
        tx: chunk_tx,
        free: free_rx,
        hasher: Sha256::new(),
        count: 0,
        progress,
    };
    let errors = FirstError::default();

    let written = std::thread::scope(|scope| {
        let writer =
            encode::spawn_writer(scope, out, chunk_rx, free_tx, compression, workers, &errors);
        // Recorded while the sink still holds its channels: if the producer failed on its
        // own, its error comes first; if it stopped because the writer went away, the
        // writer's error is there already.
        if let Err(e) = produce(&mut sink).and_then(|()| sink.send(true)) {
            errors.record(e);
            // Wakes a write stalled on a pipe (a per-call token only), so the join below does
            // not wait for the reader; the error recorded first stays the one returned.
            crate::control::stop_call(cancel);
        }
        let ChunkSink {
            hasher,
            count,
            tx,
            free,
            ..
        } = sink;
        drop((tx, free));
        let written = writer
            .join()
            .map_err(|_| Error::Internal("layer writer panicked".into()))?;
        Ok::<_, Error>((written, hasher, count))
    });
    let (written, hasher, count) = written?;
    if let Some(e) = errors.into_inner() {
        return Err(e);
    }
    let Some((digest, size)) = written else {
        return Err(Error::Internal(
            "layer writer failed without an error".into(),
        ));
    };
    let tar_digest = format_sha256(&hasher.finalize());
    let digest = digest.unwrap_or_else(|| tar_digest.clone());
    Ok((tar_digest, count, digest, size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// A tree of some 11 MiB (a dozen gzip chunks): text-like and random files, small and large.
    fn tree(root: &Path) {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in 0..120 {
            let len = [0, 100, 5000, 70_000, 400_000][i % 5];
            let data: Vec<u8> = (0..len)
                .map(|j| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    if i % 3 == 0 {
                        x as u8
                    } else {
                        b"layer diff tar gzip "[j % 20]
                    }
                })
                .collect();
            let dir = root.join(format!("d{}", i % 4));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("f{i}")), data).unwrap();
        }
    }

    fn layer(lower: &Path, upper: &Path, compression: Compression, workers: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let opts = CompareOptions {
            compression,
            ..Default::default()
        };
        write_layer_with_workers(upper, &mut out, &opts, Some(workers), |handle| {
            walk::changes(lower, upper, None, handle)
        })
        .unwrap();
        out
    }

    /// The gzip bytes are the same whatever the number of workers (and from run to run), for
    /// libdeflate and ISA-L alike, and they decode to the uncompressed layer.
    #[test]
    fn gzip_bytes_do_not_depend_on_the_worker_count() {
        let dir = tempfile::tempdir().unwrap();
        let (lower, upper) = (dir.path().join("lower"), dir.path().join("upper"));
        std::fs::create_dir(&lower).unwrap();
        tree(&upper);
        let plain = layer(&lower, &upper, Compression::None, 1);
        assert!(plain.len() > 10 * GZIP_CHUNK);
        let mut engines = vec![
            Compression::Gzip { level: 6 },
            Compression::Gzip { level: 1 },
        ];
        if crate::compression::isal::AVAILABLE {
            engines.extend(
                crate::compression::isal::DEFLATE_LEVELS
                    .map(|level| Compression::GzipIsal { level }),
            );
        }
        for compression in engines {
            let one = layer(&lower, &upper, compression, 1);
            for workers in [2, 3, 8, 1] {
                assert!(
                    layer(&lower, &upper, compression, workers) == one,
                    "{compression:?}: {workers} workers wrote other bytes than 1"
                );
            }
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&one[..])
                .read_to_end(&mut back)
                .unwrap();
            assert!(back == plain, "{compression:?} does not decode to the tar");
        }
    }
}
