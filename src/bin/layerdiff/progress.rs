//! The progress display of diff and apply: drawn on stderr by indicatif, only on a terminal
//! unless asked, and fed by the library's progress hook (a few atomic stores per 256 KiB).

use std::fs::File;
use std::io::{self, IsTerminal, Seek, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::ValueEnum;
use indicatif::{BinaryBytes, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use layerdiff::Progress;

/// `--progress`.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum When {
    /// Only when stderr is a terminal.
    Auto,
    /// Even into a pipe or file.
    Always,
    Never,
}

/// What is being shown.
pub enum Job {
    /// Applying a layer of `total` input bytes (known for a regular file, stdin included).
    Apply { total: Option<u64> },
    /// Writing a layer: the ratio of tar bytes to bytes written is shown.
    Diff,
}

pub struct Display {
    bar: ProgressBar,
    label: &'static str,
    /// Entries (apply) or changes (diff) so far, as the library last reported.
    entries: Arc<AtomicU64>,
    /// Bytes written to the output (diff).
    written: Arc<AtomicU64>,
    started: Instant,
}

/// Redraws per second at most (indicatif's own default).
const REFRESH_HZ: u8 = 20;

impl Display {
    /// The display for `job`, or `None` when it is not to be drawn (then no hook is
    /// installed at all, so the work runs exactly as without a display).
    pub fn start(when: When, quiet: bool, job: Job) -> Option<Display> {
        if quiet || when == When::Never {
            return None;
        }
        let target = if when == When::Always && !io::stderr().is_terminal() {
            // indicatif hides itself off a terminal; asked to draw anyway, draw on stderr as
            // on a terminal of default size.
            ProgressDrawTarget::term_like_with_hz(
                Box::new(console::Term::buffered_stderr()),
                REFRESH_HZ,
            )
        } else {
            // Hidden when stderr is not a terminal, or TERM is dumb.
            ProgressDrawTarget::stderr_with_hz(REFRESH_HZ)
        };
        if target.is_hidden() {
            return None;
        }
        let entries = Arc::new(AtomicU64::new(0));
        let written = Arc::new(AtomicU64::new(0));
        let (label, total, template) = match job {
            Job::Apply { total: Some(total) } => (
                "apply",
                Some(total),
                "{prefix} [{bar:24}] {bytes}/{total_bytes} ({percent}%) \
                 {binary_bytes_per_sec}, {eta} left, {entries} entries",
            ),
            Job::Apply { total: None } => (
                "apply",
                None,
                "{prefix} {spinner} {entries} entries, {bytes} read, \
                 {binary_bytes_per_sec}, {elapsed}",
            ),
            Job::Diff => (
                "diff",
                None,
                "{prefix} {spinner} {entries} changes, {bytes} of tar, {written} written \
                 ({ratio}), {binary_bytes_per_sec}, {elapsed}",
            ),
        };
        let style = ProgressStyle::with_template(template)
            .expect("valid progress template")
            .progress_chars("=> ")
            .with_key("entries", counter_key(entries.clone()))
            .with_key("written", {
                let written = written.clone();
                move |_: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{}", BinaryBytes(written.load(Ordering::Relaxed)));
                }
            })
            .with_key("ratio", {
                let written = written.clone();
                move |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = w.write_str(&ratio(s.pos(), written.load(Ordering::Relaxed)));
                }
            });
        let bar = ProgressBar::with_draw_target(total, target)
            .with_style(style)
            .with_prefix(label);
        // Keeps rate, time and spinner moving while the input or the disk stalls.
        bar.enable_steady_tick(Duration::from_millis(200));
        Some(Display {
            bar,
            label,
            entries,
            written,
            started: Instant::now(),
        })
    }

    /// The library's progress hook feeding this display.
    pub fn hook(&self) -> Progress {
        let bar = self.bar.clone();
        let entries = self.entries.clone();
        Progress::with_entries(move |bytes, n| {
            entries.store(n, Ordering::Relaxed);
            bar.set_position(bytes);
        })
    }

    /// Clear the display and print the one-line summary of an apply.
    pub fn finish_apply(self, unpacked: u64) {
        let read = self.bar.position();
        let line = format!(
            "{} entries, {} read, {} unpacked",
            self.entries.load(Ordering::Relaxed),
            BinaryBytes(read),
            BinaryBytes(unpacked)
        );
        self.finish(line);
    }

    /// Clear the display and print the one-line summary of a diff.
    pub fn finish_diff(self, tar: u64, written: u64) {
        let line = format!(
            "{} changes, {} of tar, {} written ({})",
            self.entries.load(Ordering::Relaxed),
            BinaryBytes(tar),
            BinaryBytes(written),
            ratio(tar, written)
        );
        self.finish(line);
    }

    fn finish(self, line: String) {
        self.bar.finish_and_clear();
        let secs = self.started.elapsed().as_secs_f64();
        let _ = writeln!(io::stderr().lock(), "{}: {line} in {secs:.2}s", self.label);
    }
}

fn counter_key(
    n: Arc<AtomicU64>,
) -> impl Fn(&ProgressState, &mut dyn std::fmt::Write) + Send + Sync + Clone + 'static {
    move |_: &ProgressState, w: &mut dyn std::fmt::Write| {
        let _ = write!(w, "{}", n.load(Ordering::Relaxed));
    }
}

/// How much smaller the output is than the tar, e.g. `3.20x`.
fn ratio(tar: u64, written: u64) -> String {
    if written == 0 {
        return "-".into();
    }
    format!("{:.2}x", tar as f64 / written as f64)
}

/// The bytes left to read from `file` when it is a regular file (also stdin redirected from
/// one): the total of the progress bar.
pub fn remaining_size(mut file: &File) -> Option<u64> {
    let meta = file.metadata().ok().filter(|m| m.is_file())?;
    let pos = file.stream_position().ok()?;
    Some(meta.len().saturating_sub(pos))
}

/// The output of diff, counting what is written for the display's ratio (a relaxed add per
/// write of a compressed chunk; nothing when there is no display).
pub struct CountingWriter<W> {
    inner: W,
    written: Option<Arc<AtomicU64>>,
}

impl<W> CountingWriter<W> {
    pub fn new(inner: W, display: Option<&Display>) -> Self {
        CountingWriter {
            inner,
            written: display.map(|d| d.written.clone()),
        }
    }
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(w) = &self.written {
            w.fetch_add(n as u64, Ordering::Relaxed);
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
