//! `layerdiff`: the jobs of the library for people and scripts.
//!
//! ```text
//! layerdiff diff  [--compression gzip|zstd|none] [--level N] [--source-date-epoch SECONDS]
//!                 [--xattrs capability|all] [IDMAP] LOWER UPPER -o OUT
//! layerdiff diff  [...] --upperdir DIR [--overlay-xattrs trusted|user] LOWER -o OUT
//! layerdiff apply [--whiteouts remove|overlay|aufs] [--parent DIR]... [--no-same-owner] [--diff-id DIGEST]
//!                 [IDMAP] LAYER ROOT
//! IDMAP: [--uidmap C:H:N]... [--gidmap C:H:N]... [--unmapped-id ID]
//! layerdiff ls    [--json] LAYER
//! layerdiff completions SHELL
//! ```
//!
//! Exit status: 0 success, 1 failure, 2 usage error; every failure is one line on stderr.

// Beside this file (a crate root looks in src/bin/, where Cargo would take them for programs).
#[path = "layerdiff/listing.rs"]
mod listing;
#[path = "layerdiff/progress.rs"]
mod progress;
#[path = "layerdiff/report.rs"]
mod report;

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use layerdiff::{
    ApplyOptions, CancelToken, CancellableFd, CompareOptions, Compression, DeviceNodes, IdMap,
    IdMaps, IdRange, OverlayWhiteoutForm, OverlayXattrsChoice, UnmappedId, WhiteoutMode,
};

use progress::{Display, Job, When};
use report::Failure;

#[derive(Parser)]
#[command(
    name = "layerdiff",
    about = "Compute and apply OCI image layer diffs, byte-identical to containerd"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum CompressionArg {
    Gzip,
    /// gzip written by ISA-L's deflate: much faster, some 16% larger (levels 1-3, default 1).
    GzipIsal,
    Zstd,
    None,
}

#[derive(Clone, Copy, ValueEnum)]
enum OverlayXattrsArg {
    Trusted,
    User,
}

#[derive(Clone, Copy, ValueEnum)]
enum WhiteoutArg {
    Remove,
    Overlay,
    Aufs,
}

#[derive(Clone, Copy, ValueEnum)]
enum OverlayXattrsChoiceArg {
    /// user.overlay.* inside a user namespace, else trusted.overlay.*.
    Auto,
    Trusted,
    /// For a rootless upperdir (overlayfs mounted with userxattr).
    User,
}

#[derive(Clone, Copy, ValueEnum)]
enum OverlayWhiteoutArg {
    /// A 0/0 character device, or xattr whiteouts if the kernel refuses mknod of one.
    Auto,
    Chardev,
    /// A zero-size file with overlay.whiteout (kernel 6.7+; honoured in lower layers only).
    Xattr,
}

#[derive(Clone, Copy, ValueEnum)]
enum DevicesArg {
    /// containerd's: skipped inside a user namespace, else created.
    Auto,
    /// Always created; refused mknod is an error.
    Create,
    /// Skipped where the kernel refuses to create them.
    Skip,
}

/// How diff and apply show their progress on stderr.
#[derive(Args)]
struct DisplayArgs {
    /// Progress display on stderr: auto (only when stderr is a terminal), always, never.
    #[arg(long, value_enum, default_value = "auto", value_name = "WHEN")]
    progress: When,
    /// No progress display and no summary line (errors are still printed; stdout is unchanged).
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum XattrsArg {
    /// Only `security.capability`, as containerd.
    Capability,
    /// Every readable xattr but overlayfs's own (`trusted.overlay.*`, `user.overlay.*`).
    All,
}

/// `--uidmap`/`--gidmap`/`--unmapped-id`, shared by diff and apply.
#[derive(Args)]
struct IdMapArgs {
    /// A UID range CONTAINER:HOST:SIZE (repeatable), as `ctr run --uidmap`: diff writes host
    /// UIDs as container UIDs, apply sets container UIDs as host UIDs.
    #[arg(long = "uidmap", value_name = "C:H:N", value_parser = parse_range)]
    uidmap: Vec<IdRange>,
    /// A GID range CONTAINER:HOST:SIZE (repeatable), as `--uidmap`.
    #[arg(long = "gidmap", value_name = "C:H:N", value_parser = parse_range)]
    gidmap: Vec<IdRange>,
    /// Map IDs outside the maps to this ID (e.g. 65534) instead of failing.
    #[arg(long, value_name = "ID")]
    unmapped_id: Option<u32>,
}

fn parse_range(s: &str) -> Result<IdRange, String> {
    s.parse().map_err(|e: layerdiff::Error| e.to_string())
}

impl IdMapArgs {
    fn id_maps(self) -> Result<IdMaps, String> {
        let map = |what, ranges| IdMap::new(what, ranges).map_err(|e| e.to_string());
        Ok(IdMaps {
            uid: map("--uidmap", self.uidmap)?,
            gid: map("--gidmap", self.gidmap)?,
            unmapped: self
                .unmapped_id
                .map_or(UnmappedId::Error, UnmappedId::Substitute),
        })
    }
}

#[derive(Subcommand)]
enum Command {
    /// Write the layer that turns LOWER into UPPER (containerd's walking differ), print its descriptor.
    Diff {
        /// Compression of the written layer.
        #[arg(long, value_enum, default_value = "gzip")]
        compression: CompressionArg,
        /// Compression level; 0 (or none given) = the compression's default: gzip 6, gzip-isal 1, zstd 3.
        /// gzip takes 1-9, zstd 1-22 (negative: its fast modes); `none` takes only 0.
        #[arg(long, allow_negative_numbers = true)]
        level: Option<i32>,
        /// Clamp mtimes later than this (seconds since 1970) to it, for reproducible layers.
        /// Without it, a non-empty SOURCE_DATE_EPOCH in the environment is used.
        #[arg(long, value_name = "SECONDS", allow_hyphen_values = true)]
        source_date_epoch: Option<i64>,
        /// Which xattrs the layer carries.
        #[arg(long, value_enum, default_value = "capability")]
        xattrs: XattrsArg,
        #[command(flatten)]
        ids: IdMapArgs,
        /// Read the changes from this overlayfs upperdir instead of walking an UPPER tree
        /// (LOWER is then the overlay's lower layers as one directory). Fails, naming why,
        /// where the upperdir's meaning cannot be matched exactly ("not representable").
        #[arg(long, value_name = "DIR", conflicts_with = "upper")]
        upperdir: Option<PathBuf>,
        /// The xattr namespace of the overlay's metadata: `user` for a `userxattr` mount.
        #[arg(long, value_enum, default_value = "trusted", requires = "upperdir")]
        overlay_xattrs: OverlayXattrsArg,
        /// The lower (parent) tree; `""` for none (the whole upper is the layer, as
        /// containerd's `WriteDiff("", upper)`).
        #[arg(value_parser = clap::builder::TypedValueParser::map(
            clap::builder::OsStringValueParser::new(),
            PathBuf::from,
        ))]
        lower: PathBuf,
        /// The upper (changed) tree.
        #[arg(required_unless_present = "upperdir")]
        upper: Option<PathBuf>,
        /// Where to write the layer; `-` for stdout (then no descriptor is printed).
        #[arg(short = 'o', long = "output", value_name = "OUT")]
        output: PathBuf,
        #[command(flatten)]
        display: DisplayArgs,
    },
    /// Unpack LAYER (tar, gzip or zstd; `-` for stdin) onto ROOT (containerd's fs applier), print its descriptor.
    Apply {
        /// How whiteouts are applied: delete paths, write overlayfs whiteouts (ROOT is an
        /// upperdir), or keep them as `.wh.` files (ROOT is an aufs rw branch).
        #[arg(long, value_enum, default_value = "remove")]
        whiteouts: WhiteoutArg,
        /// An overlay lowerdir or aufs ro branch (top first, repeatable) supplying attributes of
        /// parents to create.
        #[arg(long = "parent", value_name = "DIR")]
        parents: Vec<PathBuf>,
        /// Do not chown entries to the owners recorded in the layer.
        #[arg(long)]
        no_same_owner: bool,
        #[command(flatten)]
        ids: IdMapArgs,
        /// Leave entries whose owner the kernel refuses (an ID not mapped in this user
        /// namespace) owned by the applier, instead of failing.
        #[arg(long)]
        ignore_chown_errors: bool,
        /// Block and character device entries.
        #[arg(long, value_enum, default_value = "auto")]
        devices: DevicesArg,
        /// With --whiteouts overlay: the xattr namespace of opaque directories and xattr
        /// whiteouts.
        #[arg(long, value_enum, default_value = "auto")]
        overlay_xattrs: OverlayXattrsChoiceArg,
        /// With --whiteouts overlay: the form of whiteouts of single names.
        #[arg(long, value_enum, default_value = "auto")]
        overlay_whiteout: OverlayWhiteoutArg,
        /// Fail unless the uncompressed layer hashes to this diffID (sha256:...). It is checked
        /// once the whole layer is read, so on a mismatch ROOT may be partly written already
        /// (as with containerd's unpacker, which checks after applying).
        #[arg(long, value_name = "DIGEST", value_parser = parse_diff_id)]
        diff_id: Option<String>,
        /// Threads that make files: 1 = one entry at a time (containerd's order); N > 1 =
        /// regular files made by N workers, committed in stream order (same tree, same
        /// first error); 0 = the default ($LAYERDIFF_UNPACK_THREADS if set, else 1).
        #[arg(long, value_name = "N", default_value_t = 0)]
        unpack_threads: usize,
        /// The layer file, or `-` for stdin.
        layer: PathBuf,
        /// The directory to unpack into.
        root: PathBuf,
        #[command(flatten)]
        display: DisplayArgs,
    },
    /// List the entries of LAYER (tar, gzip or zstd; `-` for stdin) as apply reads them, like `tar tv`.
    #[command(long_about = listing::LONG_ABOUT)]
    Ls {
        /// One JSON object per entry and line instead of text.
        #[arg(long)]
        json: bool,
        /// The layer file, or `-` for stdin.
        layer: PathBuf,
    },
    /// Print a completion script for SHELL to stdout.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (generated from this command line's definition) into DIR.
    #[command(hide = true)]
    GenerateMan { dir: PathBuf },
}

/// The whole command line definition, with the version line naming the library's version.
fn cli_definition() -> clap::Command {
    Cli::command()
        .version(report::version_line())
        .after_long_help(report::after_help())
}

fn main() -> ExitCode {
    raise_open_file_limit();
    let definition = cli_definition();
    let cli = match definition
        .clone()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(cli) => cli,
        Err(e) => return report::exit_for_clap(e, &definition),
    };
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(),
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

fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Diff {
            compression,
            level,
            source_date_epoch,
            xattrs,
            ids,
            upperdir,
            overlay_xattrs,
            lower,
            upper,
            output,
            display,
        } => {
            let compression =
                compression_at(compression, level.unwrap_or(0)).map_err(Failure::Usage)?;
            let source_date_epoch = match source_date_epoch {
                Some(s) => Some(s),
                None => report::source_date_epoch_from_env()?,
            };
            let to_stdout = output.as_os_str() == "-";
            let out: File = if to_stdout {
                // Write to fd 1 unbuffered: Stdout's line buffering would scan binary data.
                io::stdout()
                    .as_fd()
                    .try_clone_to_owned()
                    .map_err(|e| format!("duplicate stdout: {e}"))?
                    .into()
            } else {
                File::create(&output).map_err(|e| format!("create {}: {e}", output.display()))?
            };
            let display = Display::start(display.progress, display.quiet, Job::Diff);
            // A failed diff returns at once even while its output pipe stalls (a regular file
            // cannot): the library cancels this token then, which wakes the blocked write.
            let call = CancelToken::for_call(None);
            let out = CancellableFd::new(out, call.clone());
            let opts = CompareOptions {
                compression,
                source_date_epoch,
                cancel: Some(call),
                progress: display.as_ref().map(Display::hook),
                id_maps: ids.id_maps()?,
                all_xattrs: matches!(xattrs, XattrsArg::All),
            };
            let out = progress::CountingWriter::new(out, display.as_ref());
            let result = match (&upperdir, &upper) {
                (Some(dir), _) => {
                    let ns = match overlay_xattrs {
                        OverlayXattrsArg::Trusted => layerdiff::OverlayXattrs::Trusted,
                        OverlayXattrsArg::User => layerdiff::OverlayXattrs::User,
                    };
                    layerdiff::compare_upperdir(&lower, dir, ns, out, &opts)
                }
                (None, Some(upper)) => layerdiff::compare(&lower, upper, out, &opts),
                (None, None) => unreachable!("clap requires UPPER or --upperdir"),
            };
            let diff = result.map_err(|e| e.chain_message())?;
            if let Some(d) = display {
                d.finish_diff(diff.uncompressed_size, diff.size);
            }
            if !to_stdout {
                report::print_line(&serde_json::json!({
                    "mediaType": diff.media_type,
                    "digest": diff.digest,
                    "size": diff.size,
                    "diffID": diff.diff_id,
                    "uncompressedSize": diff.uncompressed_size,
                }))?;
            }
            Ok(())
        }
        Command::Apply {
            whiteouts,
            parents,
            no_same_owner,
            ids,
            ignore_chown_errors,
            devices,
            overlay_xattrs,
            overlay_whiteout,
            diff_id,
            unpack_threads,
            layer,
            root,
            display,
        } => {
            let input = report::open_input(&layer)?;
            let call = CancelToken::for_call(None);
            let display = Display::start(
                display.progress,
                display.quiet,
                Job::Apply {
                    total: progress::remaining_size(&input),
                },
            );
            let opts = ApplyOptions {
                whiteouts: match whiteouts {
                    WhiteoutArg::Remove => WhiteoutMode::Remove,
                    WhiteoutArg::Overlay => WhiteoutMode::Overlay,
                    WhiteoutArg::Aufs => WhiteoutMode::Aufs,
                },
                parents,
                same_owner: !no_same_owner,
                ignore_chown_errors,
                devices: match devices {
                    DevicesArg::Auto => DeviceNodes::Auto,
                    DevicesArg::Create => DeviceNodes::Create,
                    DevicesArg::Skip => DeviceNodes::SkipRefused,
                },
                overlay_xattrs: match overlay_xattrs {
                    OverlayXattrsChoiceArg::Auto => OverlayXattrsChoice::Auto,
                    OverlayXattrsChoiceArg::Trusted => OverlayXattrsChoice::Trusted,
                    OverlayXattrsChoiceArg::User => OverlayXattrsChoice::User,
                },
                overlay_whiteout: match overlay_whiteout {
                    OverlayWhiteoutArg::Auto => OverlayWhiteoutForm::Auto,
                    OverlayWhiteoutArg::Chardev => OverlayWhiteoutForm::CharDevice,
                    OverlayWhiteoutArg::Xattr => OverlayWhiteoutForm::Xattr,
                },
                sync_fs: false,
                unpack_threads,
                cancel: Some(call.clone()),
                progress: display.as_ref().map(Display::hook),
                expected_diff_id: diff_id,
                id_maps: ids.id_maps()?,
                ..ApplyOptions::default()
            };
            // A failed apply returns at once even while its input pipe (or terminal) stalls: the
            // library cancels `call` then, which wakes the blocked read.
            let input = CancellableFd::new(input, call);
            let applied = layerdiff::apply(&root, input, &opts).map_err(|e| e.chain_message())?;
            if let Some(d) = display {
                d.finish_apply(applied.size);
            }
            report::print_line(&serde_json::json!({
                "mediaType": layerdiff::Applied::MEDIA_TYPE,
                "digest": applied.digest,
                "size": applied.size,
            }))
        }
        Command::Ls { json, layer } => {
            let input = report::open_input(&layer)?;
            listing::run(input, json)
        }
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut cli_definition(), "layerdiff", &mut out);
            report::write_stdout(&out)
        }
        Command::GenerateMan { dir } => report::write_man_pages(cli_definition(), &dir),
    }
}

/// `--diff-id`, checked as the library checks it, so a typo is a usage error before any work.
fn parse_diff_id(s: &str) -> Result<String, String> {
    match layerdiff::validate_sha256(s) {
        Ok(()) => Ok(s.to_string()),
        Err(_) => Err("expected sha256: and 64 lowercase hex digits".into()),
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
        (CompressionArg::GzipIsal, 0) => Compression::GzipIsal { level: 1 },
        (CompressionArg::GzipIsal, 1..=3) => Compression::GzipIsal {
            level: level as u32,
        },
        (CompressionArg::GzipIsal, _) => {
            return Err(format!(
                "invalid argument: gzip-isal level {level} is not in 1..=3 (0 = the default, 1)"
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
