//! The threads of apply: an input reader (reads and reports progress), a decoder (gzip or
//! zstd, detected), the unpacker on the calling thread, and a hasher (the diffID) behind it.
//! Buffers flow forward over bounded channels and come back for reuse.

use std::io::{self, BufRead, Read};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;

use sha2::{Digest as _, Sha256};

use crate::compression;
use crate::control::{CancelToken, Progress};
use crate::digest::format_sha256;
use crate::error::{Error, Result};

const CHUNK: usize = 256 * 1024;
const CHANNEL_DEPTH: usize = 8;
/// The input's first buffer holds at least this much (or all of a shorter input): the decoder
/// detects the format from its head.
const HEAD: usize = 512;

/// Run `unpack` on this thread over the decompressed stream of `input`, with the input reader,
/// decoder and hasher on their own threads. Returns the digest and size of the decompressed
/// stream (trailing bytes included). `progress` gets the input bytes consumed before each read
/// and once more at the end, whether or not the apply succeeded, as containerd's progress
/// reader does when it is closed.
pub(super) fn run<R: Read + Send>(
    input: R,
    progress: Option<Progress>,
    cancel: Option<CancelToken>,
    unpack: impl FnOnce(&mut ChannelReader) -> Result<()>,
) -> Result<(String, u64)> {
    let consumed = Arc::new(AtomicU64::new(0));
    let reader_count = consumed.clone();
    // Input bytes read but not yet taken by the decoder: at zero, its next read would wait.
    let unread = Arc::new(AtomicU64::new(0));
    let input_unread = unread.clone();
    let input_progress = progress.clone();
    let result = std::thread::scope(|scope| -> Result<(String, u64)> {
        // Reading the input runs on its own thread too: the decoder is the busiest stage, and
        // a read (a copy from the page cache, or a callback into the caller) is a tenth of it.
        let (input_tx, input_rx) = mpsc::sync_channel::<io::Result<Vec<u8>>>(CHANNEL_DEPTH);
        let (input_recycle_tx, input_recycle_rx) = mpsc::channel::<Vec<u8>>();
        let input_reader = scope.spawn(move || {
            read_input(
                input,
                input_tx,
                input_recycle_rx,
                input_progress,
                reader_count,
                input_unread,
            )
        });
        let compressed = ChannelReader {
            rx: Some(input_rx),
            done: Some(Done::Recycle(input_recycle_tx)),
            buf: Vec::new(),
            pos: 0,
            unread: Some(unread.clone()),
        };

        let (tx, rx) = mpsc::sync_channel::<io::Result<Vec<u8>>>(CHANNEL_DEPTH);
        // Consumed buffers go back to the decoder, so chunks are not allocated and zeroed anew.
        let (recycle_tx, recycle_rx) = mpsc::channel::<Vec<u8>>();
        let call = cancel.clone();
        let decoder = scope.spawn(move || decode(compressed, tx, recycle_rx, cancel, unread));
        // Buffers the unpacker is done with are hashed on a third thread (sha256 is about a
        // third of the unpacker's work), in stream order, then recycled. The channel is
        // bounded so a slow hasher holds the unpacker back instead of piling up buffers.
        let (hash_tx, hash_rx) = mpsc::sync_channel::<Vec<u8>>(CHANNEL_DEPTH);
        let hasher = scope.spawn(move || hash_chunks(hash_rx, recycle_tx));

        let mut reader = ChannelReader {
            rx: Some(rx),
            done: Some(Done::Hash(hash_tx)),
            buf: Vec::new(),
            pos: 0,
            unread: None,
        };
        // Every error of the stages before the unpacker reaches it in the stream, so its
        // result is the pipeline's.
        let unpacked = unpack(&mut reader);
        if unpacked.is_err() {
            // Wakes an input read stalled on a pipe (a per-call token only), so the joins
            // below do not wait for the writer; the error stays the unpacker's.
            crate::control::stop_call(call.as_ref());
        }
        // Hands the last buffer to the hasher and closes its channel; dropping the receiver
        // stops the decoder if we are leaving early.
        reader.finish();
        drop(reader);
        let digest = hasher
            .join()
            .map_err(|_| Error::Internal("hasher thread panicked".into()))?;
        decoder
            .join()
            .map_err(|_| Error::Internal("decoder thread panicked".into()))?;
        input_reader
            .join()
            .map_err(|_| Error::Internal("input reader thread panicked".into()))?;
        unpacked.map(|()| digest)
    });
    if let Some(p) = &progress {
        p.report(consumed.load(AtomicOrdering::Relaxed));
    }
    result
}

/// The input thread: read (reporting progress as containerd does, before each read) and
/// forward every buffer read, in order, until end of input or the first error. A buffer goes
/// on when full or when a read came back short (a pipe or socket drained): a writer that
/// stalls must not hold back bytes already read, which may be the layer's error.
fn read_input<R: Read>(
    input: R,
    tx: SyncSender<io::Result<Vec<u8>>>,
    recycled: Receiver<Vec<u8>>,
    progress: Option<Progress>,
    counter: Arc<AtomicU64>,
    unread: Arc<AtomicU64>,
) {
    let mut counted = CountingReader {
        inner: input,
        count: counter,
        progress,
    };
    let mut first = true;
    loop {
        let mut buf = recycled.try_recv().unwrap_or_default();
        buf.resize(CHUNK, 0);
        let (mut n, mut end, mut failure) = (0, false, None);
        let head = if first { HEAD } else { 1 };
        while n < CHUNK {
            match counted.read(&mut buf[n..]) {
                Ok(0) => {
                    end = true;
                    break;
                }
                Ok(k) => {
                    n += k;
                    // Short of what was asked: nothing more is waiting (a regular file
                    // fills every read but the last).
                    if n < CHUNK && n >= head {
                        break;
                    }
                }
                // Retried here as every reader above would retry it.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if n > 0 {
            first = false;
            buf.truncate(n);
            // Counted before the send, so the decoder never sees more taken than sent.
            unread.fetch_add(n as u64, AtomicOrdering::Release);
            if tx.send(Ok(buf)).is_err() {
                // The decoder stopped (it or the unpacker reports why).
                return;
            }
        }
        if let Some(e) = failure {
            // The decoder sees the very error the input returned, after the bytes before it.
            let _ = tx.send(Err(e));
            return;
        }
        if end {
            return;
        }
    }
}

/// The decoder thread: decompress and forward everything, trailing bytes included. Its
/// errors travel in the stream, after the bytes decoded before them, so the unpacker reports
/// them where containerd's sequential reader would; when the unpacker has stopped (and
/// reports why), the decoder just stops.
fn decode(
    mut input: ChannelReader,
    tx: SyncSender<io::Result<Vec<u8>>>,
    recycled: Receiver<Vec<u8>>,
    cancel: Option<CancelToken>,
    unread: Arc<AtomicU64>,
) {
    let fail = |e: Error| {
        let _ = tx.send(Err(e.into_io()));
    };
    // Plain tar needs no decoder: the input's buffers go on as they are, not copied.
    if matches!(input.fill_buf(), Ok(head) if head.len() >= 10
        && compression::decode::detect_bytes(head) == compression::decode::Detected::Tar)
    {
        return pass_through(input, &tx, &recycled, cancel.as_ref());
    }
    let mut decoded = match compression::decompress_buffered(input) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    loop {
        if cancel.as_ref().is_some_and(CancelToken::is_canceled) {
            return fail(Error::Canceled);
        }
        let mut buf = recycled.try_recv().unwrap_or_default();
        buf.resize(CHUNK, 0);
        let mut n = 0;
        // Fill whole chunks so the unpacker sees few, large buffers, but hand on what is
        // decoded once every input byte read so far is taken: the next read would wait for
        // the writer, and what it holds back may be the layer's error.
        while n < CHUNK {
            match decoded.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => {
                    n += k;
                    if unread.load(AtomicOrdering::Acquire) == 0 {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return fail(compression::decode_error(e)),
            }
        }
        if n == 0 {
            return;
        }
        buf.truncate(n);
        if tx.send(Ok(buf)).is_err() {
            return;
        }
    }
}

/// The decoder thread for plain tar: forward the input's own buffers, in order, and return
/// the ones the hasher is done with to the input reader. Errors and cancels travel as
/// [`decode`]'s would.
fn pass_through(
    mut input: ChannelReader,
    tx: &SyncSender<io::Result<Vec<u8>>>,
    recycled: &Receiver<Vec<u8>>,
    cancel: Option<&CancelToken>,
) {
    loop {
        if cancel.is_some_and(CancelToken::is_canceled) {
            let _ = tx.send(Err(Error::Canceled.into_io()));
            return;
        }
        let chunk = match input.take_chunk() {
            Ok(Some(chunk)) => Ok(chunk),
            Ok(None) => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Err(compression::decode_error(e).into_io()),
        };
        let failed = chunk.is_err();
        if tx.send(chunk).is_err() || failed {
            return;
        }
        while let Ok(buf) = recycled.try_recv() {
            input.recycle(buf);
        }
    }
}

struct CountingReader<R> {
    inner: R,
    count: Arc<AtomicU64>,
    progress: Option<Progress>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let before = self.count.load(AtomicOrdering::Relaxed);
        if let Some(p) = &self.progress {
            p.report(before);
        }
        let n = self.inner.read(buf)?;
        self.count.store(before + n as u64, AtomicOrdering::Relaxed);
        Ok(n)
    }
}

/// sha256 and size of every decompressed byte (the layer's diffID), buffer by buffer in
/// stream order; each buffer then goes back to the decoder.
fn hash_chunks(chunks: Receiver<Vec<u8>>, recycle: mpsc::Sender<Vec<u8>>) -> (String, u64) {
    let mut hasher = Sha256::new();
    let mut count = 0u64;
    for chunk in chunks {
        hasher.update(&chunk);
        count += chunk.len() as u64;
        // The decoder may be gone already; the buffer is then simply freed.
        let _ = recycle.send(chunk);
    }
    (format_sha256(&hasher.finalize()), count)
}

/// Where a [`ChannelReader`] passes each buffer once consumed (or at `finish`).
enum Done {
    /// To the hasher (which must see every buffer).
    Hash(SyncSender<Vec<u8>>),
    /// Back to the producer for reuse (which may be gone).
    Recycle(mpsc::Sender<Vec<u8>>),
}

impl Done {
    /// False if a buffer the hasher needed could not be delivered.
    fn pass(&self, buf: Vec<u8>) -> bool {
        match self {
            Done::Hash(tx) => tx.send(buf).is_ok(),
            Done::Recycle(tx) => {
                let _ = tx.send(buf);
                true
            }
        }
    }
}

/// The receiving end of a channel of buffers, as a `BufRead` whose buffers are the
/// producer's chunks (the decoder's input, the unpacker's tar stream).
pub(super) struct ChannelReader {
    rx: Option<Receiver<io::Result<Vec<u8>>>>,
    done: Option<Done>,
    buf: Vec<u8>,
    pos: usize,
    /// For the decoder's input: the input reader's count of bytes not yet consumed.
    unread: Option<Arc<AtomicU64>>,
}

impl ChannelReader {
    /// The rest of the current buffer, or else the next one, taken whole (`None` at the end).
    fn take_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        if self.fill_buf()?.is_empty() {
            return Ok(None);
        }
        let mut chunk = std::mem::take(&mut self.buf);
        chunk.drain(..self.pos);
        self.pos = 0;
        if let Some(unread) = &self.unread {
            unread.fetch_sub(chunk.len() as u64, AtomicOrdering::Release);
        }
        Ok(Some(chunk))
    }

    /// Hand a buffer back to the producer (for the decoder's input: the input reader).
    fn recycle(&self, buf: Vec<u8>) {
        if let Some(done) = &self.done {
            done.pass(buf);
        }
    }

    /// Pass the current buffer to the hasher and close its channel.
    fn finish(&mut self) {
        if let Some(done) = self.done.take() {
            let last = std::mem::take(&mut self.buf);
            if !last.is_empty() {
                done.pass(last);
            }
        }
        self.pos = 0;
    }
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(out.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for ChannelReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.pos == self.buf.len() {
            let Some(rx) = &self.rx else { return Ok(&[]) };
            match rx.recv() {
                Ok(Ok(chunk)) => {
                    let used = std::mem::replace(&mut self.buf, chunk);
                    if !used.is_empty() {
                        if let Some(done) = &self.done {
                            // Fails only if the hasher is gone, which it is not before
                            // `finish`; the digest would then be wrong, so say so.
                            if !done.pass(used) {
                                return Err(
                                    Error::Internal("hasher thread stopped".into()).into_io()
                                );
                            }
                        }
                    }
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.rx = None;
                    return Err(e);
                }
                Err(_) => {
                    self.rx = None;
                    return Ok(&[]);
                }
            }
        }
        Ok(&self.buf[self.pos..])
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
        if let Some(unread) = &self.unread {
            unread.fetch_sub(n as u64, AtomicOrdering::Release);
        }
    }
}
