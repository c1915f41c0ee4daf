//! `layerdiff`: the two jobs of the library for people and scripts.
//!
//! ```text
//! layerdiff diff  [--compression gzip|zstd|none] [--level N] [--source-date-epoch SECONDS] LOWER UPPER -o OUT
//! layerdiff apply [--whiteouts remove|overlay] [--parent DIR]... [--no-same-owner] LAYER ROOT
//! ```

use std::fs::File;
use std::io::{self, IsTerminal, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand, ValueEnum};
use layerdiff::{ApplyOptions, CompareOptions, Compression, Progress, WhiteoutMode};

#[derive(Parser)]
#[command(
    name = "layerdiff",
    version,
    about = "Compute and apply OCI image layer diffs, byte-identical to containerd"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum CompressionArg {
    Gzip,
    Zstd,
    None,
}

#[derive(Clone, Copy, ValueEnum)]
enum WhiteoutArg {
    Remove,
    Overlay,
}

#[derive(Subcommand)]
enum Command {
    /// Write the layer that turns LOWER into UPPER (containerd's walking differ), print its descriptor.
    Diff {
        /// Compression of the written layer.
        #[arg(long, value_enum, default_value = "gzip")]
        compression: CompressionArg,
        /// Compression level; 0 (or none given) = the compression's default: gzip 6, zstd 3.
        /// gzip takes 1-9, zstd 1-22 (negative: its fast modes); `none` takes only 0.
        #[arg(long, allow_negative_numbers = true)]
        level: Option<i32>,
        /// Clamp mtimes later than this (seconds since 1970) to it, for reproducible layers.
        #[arg(long, value_name = "SECONDS")]
        source_date_epoch: Option<i64>,
        /// The lower (parent) tree; `""` for none (the whole upper is the layer, as
        /// containerd's `WriteDiff("", upper)`).
        #[arg(value_parser = clap::builder::TypedValueParser::map(
            clap::builder::OsStringValueParser::new(),
            PathBuf::from,
        ))]
        lower: PathBuf,
        /// The upper (changed) tree.
        upper: PathBuf,
        /// Where to write the layer; `-` for stdout (then no descriptor is printed).
        #[arg(short = 'o', long = "output", value_name = "OUT")]
        output: PathBuf,
    },
    /// Unpack LAYER (tar, gzip or zstd; `-` for stdin) onto ROOT (containerd's fs applier), print its descriptor.
    Apply {
        /// How whiteouts are applied: delete paths, or write overlayfs whiteouts (ROOT is an upperdir).
        #[arg(long, value_enum, default_value = "remove")]
        whiteouts: WhiteoutArg,
        /// An overlay lowerdir (top first, repeatable) supplying attributes of parents to create.
        #[arg(long = "parent", value_name = "DIR")]
        parents: Vec<PathBuf>,
        /// Do not chown entries to the owners recorded in the layer.
        #[arg(long)]
        no_same_owner: bool,
        /// The layer file, or `-` for stdin.
        layer: PathBuf,
        /// The directory to unpack into.
        root: PathBuf,
    },
}

fn main() -> ExitCode {
    raise_open_file_limit();
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("layerdiff: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Raise the soft limit on open files to the hard one, as every Go program (containerd
/// included) does at startup: removing a tree holds one descriptor per level, and a layer may
/// build trees some 2000 levels deep, past the common soft limit of 1024.
fn raise_open_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current != lim.maximum {
        lim.current = lim.maximum;
        // Best effort, as in Go: on failure the old limit simply stays.
        let _ = setrlimit(Resource::Nofile, lim);
    }
}

fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Diff {
            compression,
            level,
            source_date_epoch,
            lower,
            upper,
            output,
        } => {
            let compression = compression_at(compression, level.unwrap_or(0))?;
            let opts = CompareOptions {
                compression,
                source_date_epoch,
                cancel: None,
                progress: progress_bar("diff"),
            };
            let to_stdout = output.as_os_str() == "-";
            let result = if to_stdout {
                // Write to fd 1 unbuffered: Stdout's line buffering would scan binary data.
                let stdout = io::stdout()
                    .as_fd()
                    .try_clone_to_owned()
                    .map_err(|e| format!("duplicate stdout: {e}"))?;
                layerdiff::compare(&lower, &upper, File::from(stdout), &opts)
            } else {
                let file = File::create(&output)
                    .map_err(|e| format!("create {}: {e}", output.display()))?;
                layerdiff::compare(&lower, &upper, file, &opts)
            };
            finish_progress(&opts.progress);
            let diff = result.map_err(|e| e.chain_message())?;
            if !to_stdout {
                print_json(&serde_json::json!({
                    "mediaType": diff.media_type,
                    "digest": diff.digest,
                    "size": diff.size,
                    "diffID": diff.diff_id,
                    "uncompressedSize": diff.uncompressed_size,
                }));
            }
            Ok(())
        }
        Command::Apply {
            whiteouts,
            parents,
            no_same_owner,
            layer,
            root,
        } => {
            let opts = ApplyOptions {
                whiteouts: match whiteouts {
                    WhiteoutArg::Remove => WhiteoutMode::Remove,
                    WhiteoutArg::Overlay => WhiteoutMode::Overlay,
                },
                parents,
                same_owner: !no_same_owner,
                sync_fs: false,
                cancel: None,
                progress: progress_bar("apply"),
                ..ApplyOptions::default()
            };
            let result = if layer.as_os_str() == "-" {
                layerdiff::apply(&root, io::stdin(), &opts)
            } else {
                let file =
                    File::open(&layer).map_err(|e| format!("open {}: {e}", layer.display()))?;
                layerdiff::apply(&root, file, &opts)
            };
            finish_progress(&opts.progress);
            let applied = result.map_err(|e| e.chain_message())?;
            print_json(&serde_json::json!({
                "mediaType": layerdiff::Applied::MEDIA_TYPE,
                "digest": applied.digest,
                "size": applied.size,
            }));
            Ok(())
        }
    }
}

/// `--level`: 0 is the compression's default for every compression, as in the C ABI and the
/// Go package (so gzip level 0, stored, is not offered: use `--compression none`).
fn compression_at(compression: CompressionArg, level: i32) -> Result<Compression, String> {
    let chosen = match (compression, level) {
        // The library's default: gzip at Go's default level (6), as containerd.
        (CompressionArg::Gzip, 0) => Compression::default(),
        (CompressionArg::Gzip, 1..=9) => Compression::Gzip {
            level: level as u32,
        },
        (CompressionArg::Gzip, _) => {
            return Err(format!(
                "invalid argument: gzip level {level} is not in 1..=9 (0 = the default, 6)"
            ))
        }
        (CompressionArg::Zstd, 0) => Compression::Zstd {
            level: zstd::DEFAULT_COMPRESSION_LEVEL,
        },
        (CompressionArg::Zstd, _) => Compression::Zstd { level },
        (CompressionArg::None, 0) => Compression::None,
        (CompressionArg::None, _) => {
            return Err(format!(
                "invalid argument: --level {level} makes no sense with --compression none (only 0)"
            ))
        }
    };
    chosen.validate().map_err(|e| e.chain_message())?;
    Ok(chosen)
}

fn print_json(v: &serde_json::Value) {
    println!("{v}");
}

/// A one-line byte counter on stderr, redrawn at most ten times a second, only on a terminal.
fn progress_bar(label: &'static str) -> Option<Progress> {
    if !io::stderr().is_terminal() {
        return None;
    }
    let last_draw = Arc::new(AtomicU64::new(0));
    Some(Progress::new(move |bytes| {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        if now_ms.saturating_sub(last_draw.load(Ordering::Relaxed)) < 100 {
            return;
        }
        last_draw.store(now_ms, Ordering::Relaxed);
        let mut err = io::stderr().lock();
        let _ = write!(
            err,
            "\r{label}: {:>10.1} MiB",
            bytes as f64 / (1024.0 * 1024.0)
        );
        let _ = err.flush();
    }))
}

fn finish_progress(progress: &Option<Progress>) {
    if progress.is_some() {
        eprintln!();
    }
}
