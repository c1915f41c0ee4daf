//! Randomized adversarial apply: seeded hostile layers (`..`, absolute names, symlinks out of
//! the root, chains and loops, hardlinks through symlinks, whiteouts through symlinked dirs,
//! dirs replaced by symlinks mid-layer, PAX and GNU long names, devices, fifos, xattrs, odd
//! numbers) applied in both whiteout modes, with the openat2 resolver and its fallback walk.
//! Each must return (Ok or a non-internal Err) without panicking or hanging, and leave the
//! sandbox around the root — a sentinel tree, the sandbox directory itself, `/` and `/tmp` —
//! exactly as it was. A second test feeds byte-mutated and truncated tar/gzip/zstd layers.
//!
//! A failure prints the seed, the mode and the entry list of every failing layer. The sandbox
//! and the generator are in `hostile/`; this file runs them.

mod common;
mod hostile;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use common::compress::{gzip, zstd};
use common::require_root;
use common::rng::Rng;
use common::tar::{describe, encode, fix_checksum, Carrier, Entry};
use common::tree::diff_snapshots;
use hostile::generator::{benign_layer, Gen};
use hostile::sandbox::{strays, Sandbox};
use layerdiff::{apply, Applied, ApplyOptions, ErrorKind, Resolver, WhiteoutMode};

/// Sandboxes per whiteout mode in the hostile test.
const SEEDS: u64 = 300;
/// Layers applied one after another onto each sandbox.
const LAYERS_PER_SEED: usize = 3;
/// Mutated layers in the corruption test.
const MUTATIONS: u64 = 400;
/// An apply that takes longer than this is a hang (the layers are a few KiB).
const HANG_AFTER: Duration = Duration::from_secs(60);
/// The corruption test's layers are made with the fastest levels (they are many).
const GZIP_LEVEL: u32 = 1;
const ZSTD_LEVEL: i32 = 1;

// ---------------------------------------------------------------------------------------------
// Running apply with panic and hang detection.

enum Outcome {
    Done(layerdiff::Result<Applied>),
    Panicked(String),
    Hung,
}

fn run_apply(root: &Path, layer: Vec<u8>, whiteouts: WhiteoutMode, resolver: Resolver) -> Outcome {
    let (tx, rx) = mpsc::channel();
    let root = root.to_path_buf();
    std::thread::spawn(move || {
        let r = std::panic::catch_unwind(|| {
            let opts = ApplyOptions {
                whiteouts,
                resolver,
                ..ApplyOptions::default()
            };
            apply(&root, std::io::Cursor::new(layer), &opts)
        });
        let _ = tx.send(r);
    });
    match rx.recv_timeout(HANG_AFTER) {
        Ok(Ok(r)) => Outcome::Done(r),
        Ok(Err(p)) => Outcome::Panicked(
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default(),
        ),
        Err(_) => Outcome::Hung,
    }
}

/// Apply `layer` into a fresh sandbox and list every broken promise.
fn check_layer(
    layer: Vec<u8>,
    whiteouts: WhiteoutMode,
    resolver: Resolver,
    sb: &Sandbox,
) -> (Vec<String>, Option<layerdiff::Result<Applied>>) {
    let parent = sb.path().parent().unwrap().to_path_buf();
    let strays_before = strays(&parent);
    let before = sb.snapshot();
    let mut problems = Vec::new();
    let outcome = run_apply(&sb.root(), layer, whiteouts, resolver);
    let result = match outcome {
        Outcome::Done(r) => {
            if let Err(e) = &r {
                let msg = e.chain_message();
                if e.kind() == ErrorKind::Internal {
                    problems.push(format!("internal error: {msg}"));
                }
                if msg.trim().is_empty() {
                    problems.push("error with an empty message".into());
                }
            }
            Some(r)
        }
        Outcome::Panicked(m) => {
            problems.push(format!("PANIC: {m}"));
            None
        }
        Outcome::Hung => {
            problems.push(format!("HANG: apply did not return within {HANG_AFTER:?}"));
            None
        }
    };
    problems.extend(
        diff_snapshots(&before, &sb.snapshot())
            .into_iter()
            .map(|d| format!("outside the root: {d}")),
    );
    let strays_after = strays(&parent);
    if strays_after != strays_before {
        problems.push(format!(
            "written outside the sandbox: {strays_after:?} (before {strays_before:?})"
        ));
    }
    (problems, result)
}

/// The first few failures, for an assertion message of readable length.
fn first_failures(failures: &[String]) -> String {
    failures[..failures.len().min(10)].join("\n")
}

#[test]
fn hostile_layers_stay_inside_the_root() {
    require_root!();
    let verbose = std::env::var_os("HOSTILE_VERBOSE").is_some();
    let mut failures = Vec::new();
    let mut stats: BTreeMap<String, usize> = BTreeMap::new();
    // A longer hunt: HOSTILE_SEEDS=5000 cargo test --release --test apply_hostile
    let seeds = std::env::var("HOSTILE_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SEEDS);
    for seed in 0..seeds {
        for whiteouts in [WhiteoutMode::Remove, WhiteoutMode::Overlay] {
            // Odd seeds resolve with the manual walk (kernels without openat2).
            let fallback = seed % 2 == 1;
            let resolver = if fallback {
                Resolver::Walk
            } else {
                Resolver::Auto
            };
            let sb = Sandbox::new();
            let sandbox_rel = sb
                .path()
                .to_str()
                .unwrap()
                .trim_start_matches('/')
                .to_string();
            let mut g = Gen::new(seed, &sandbox_rel);
            // Layers stack onto what the previous ones (even failed ones) left in the root.
            let mut layers = Vec::new();
            for index in 0..LAYERS_PER_SEED {
                let entries = g.layer();
                let (problems, result) = check_layer(encode(&entries), whiteouts, resolver, &sb);
                layers.push(entries);
                let key = match &result {
                    Some(Ok(_)) => "ok".to_string(),
                    Some(Err(e)) => format!("err {:?}", e.kind()),
                    None => "broken".to_string(),
                };
                *stats.entry(key).or_default() += 1;
                if verbose {
                    if let Some(Err(e)) = &result {
                        eprintln!(
                            "seed {seed} {whiteouts:?} layer {index}: {}",
                            e.chain_message()
                        );
                    }
                }
                if !problems.is_empty() {
                    let mut listing = String::new();
                    for (i, l) in layers.iter().enumerate() {
                        let _ = write!(listing, "  layer {i}:\n{}", describe(l));
                    }
                    failures.push(format!(
                        "seed {seed}, {whiteouts:?} whiteouts, {} resolver, layer {index}, sandbox {}:\n  {}\n  result: {:?}\n{listing}",
                        if fallback { "fallback" } else { "openat2" },
                        sb.path().display(),
                        problems.join("\n  "),
                        result.map(|r| r.map_err(|e| e.chain_message())),
                    ));
                    break;
                }
            }
        }
    }
    eprintln!("hostile layers: {stats:?}");
    assert!(
        failures.is_empty(),
        "{} hostile layers broke a promise:\n{}",
        failures.len(),
        first_failures(&failures)
    );
    // Both outcomes must be common, or the generator has degenerated.
    let total: usize = stats.values().sum();
    let ok = stats.get("ok").copied().unwrap_or(0);
    assert!(ok > total / 8, "too few layers applied: {stats:?}");
    assert!(ok < total * 4 / 5, "too few layers rejected: {stats:?}");
}

// ---------------------------------------------------------------------------------------------
// Corrupted streams.

#[test]
fn corrupted_streams_fail_cleanly() {
    require_root!();
    let mut failures = Vec::new();
    let mut stats: BTreeMap<String, usize> = BTreeMap::new();
    for seed in 0..MUTATIONS {
        let mut rng = Rng::new(seed ^ 0xc0ffee);
        let tar = benign_layer(&mut rng);
        let (codec, mut bytes) = match seed % 3 {
            0 => ("tar", tar),
            1 => ("gzip", gzip(&tar, GZIP_LEVEL)),
            _ => ("zstd", zstd(&tar, ZSTD_LEVEL)),
        };
        let len = bytes.len();
        let how = match rng.below(6) {
            0 | 1 => {
                let at = rng.below(len as u64) as usize;
                bytes.truncate(at);
                format!("truncated at {at} of {len}")
            }
            2 | 3 => {
                let flips = 1 + rng.below(8);
                let mut at = Vec::new();
                for _ in 0..flips {
                    let i = rng.below(len as u64) as usize;
                    bytes[i] ^= 1 << rng.below(8);
                    at.push(i);
                }
                format!("bits flipped at {at:?} of {len}")
            }
            4 => {
                let i = rng.below(len as u64) as usize;
                let n = 1 + rng.below(600) as usize;
                let junk = rng.bytes(n);
                bytes.splice(i..i, junk.iter().copied());
                format!("{} junk bytes inserted at {i} of {len}", junk.len())
            }
            _ => {
                // Overwrite a whole header field of the tar with junk, then recompress.
                let mut tar = if codec == "tar" {
                    bytes.clone()
                } else {
                    benign_layer(&mut Rng::new(seed ^ 0xc0ffee))
                };
                let blk = 512 * rng.below((tar.len() / 512) as u64) as usize;
                let (off, n) = *rng.pick(&[
                    (100usize, 8usize),
                    (124, 12),
                    (136, 12),
                    (148, 8),
                    (156, 1),
                    (257, 8),
                    (329, 16),
                    (0, 100),
                ]);
                let junk = rng.bytes(n);
                tar[blk + off..blk + off + n].copy_from_slice(&junk);
                if rng.chance(70) {
                    fix_checksum(&mut tar[blk..blk + 512]);
                }
                bytes = match codec {
                    "gzip" => gzip(&tar, GZIP_LEVEL),
                    "zstd" => zstd(&tar, ZSTD_LEVEL),
                    _ => tar,
                };
                format!("header bytes {off}..{} of block at {blk} replaced", off + n)
            }
        };
        let truncated_compressed = how.starts_with("truncated") && codec != "tar";
        let sb = Sandbox::new();
        let mode = if seed % 2 == 0 {
            WhiteoutMode::Remove
        } else {
            WhiteoutMode::Overlay
        };
        let (mut problems, result) = check_layer(bytes, mode, Resolver::Auto, &sb);
        if let Some(r) = &result {
            let key = match r {
                Ok(_) => format!("{codec} ok"),
                Err(e) => format!("{codec} err {:?}", e.kind()),
            };
            *stats.entry(key).or_default() += 1;
            // A compressed stream cut short is always bad data, whatever was written before.
            if truncated_compressed && !matches!(r, Err(e) if e.kind() == ErrorKind::InvalidArchive)
            {
                problems.push(format!(
                    "truncated {codec} stream not reported as an invalid archive"
                ));
            }
            if let Err(e) = r {
                if !matches!(
                    e.kind(),
                    ErrorKind::InvalidArchive
                        | ErrorKind::Io
                        | ErrorKind::NotFound
                        | ErrorKind::InvalidArgument
                ) {
                    problems.push(format!("unexpected error kind {:?}", e.kind()));
                }
            }
        }
        if !problems.is_empty() {
            failures.push(format!(
                "seed {seed} ({codec}, {how}):\n  {}\n  result: {:?}",
                problems.join("\n  "),
                result.map(|r| r.map_err(|e| e.chain_message()))
            ));
        }
    }
    eprintln!("corrupted streams: {stats:?}");
    assert!(
        failures.is_empty(),
        "{} of {MUTATIONS} corrupted layers broke a promise:\n{}",
        failures.len(),
        first_failures(&failures)
    );
}

/// Junk that is not a layer at all: every one a clear error or (empty input) an empty layer.
#[test]
fn random_junk_fails_cleanly() {
    require_root!();
    let mut rng = Rng::new(7);
    let mut inputs: Vec<(String, Vec<u8>)> = vec![
        ("empty".into(), Vec::new()),
        ("gzip magic only".into(), vec![0x1f, 0x8b]),
        ("zstd magic only".into(), vec![0x28, 0xb5, 0x2f, 0xfd]),
        ("one zero block".into(), vec![0; 512]),
    ];
    for i in 0..40 {
        let n = rng.below(5000) as usize;
        let mut b = rng.bytes(n);
        match i % 3 {
            1 if b.len() > 2 => b[..2].copy_from_slice(&[0x1f, 0x8b]),
            2 if b.len() > 4 => b[..4].copy_from_slice(&[0x28, 0xb5, 0x2f, 0xfd]),
            _ => {}
        }
        inputs.push((format!("junk #{i} ({n} bytes)"), b));
    }
    let mut failures = Vec::new();
    for (what, bytes) in inputs {
        let empty_ok = bytes.is_empty() || bytes.iter().all(|&b| b == 0);
        let sb = Sandbox::new();
        let (mut problems, result) = check_layer(bytes, WhiteoutMode::Remove, Resolver::Auto, &sb);
        match &result {
            Some(Ok(_)) if !empty_ok => problems.push("junk accepted as a layer".into()),
            Some(Err(e)) if e.kind() != ErrorKind::InvalidArchive => {
                problems.push(format!("kind {:?}, not InvalidArchive", e.kind()))
            }
            _ => {}
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{what}: {} ({:?})",
                problems.join("; "),
                result.map(|r| r.map_err(|e| e.chain_message()))
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Names with very many components (a GNU long name may be up to 1 MiB) fail or apply
/// cleanly, quickly, with either resolver. Resolving such a name used to recurse once per
/// component and overflow the stack — an abort, not a panic, so through the C ABI or the Go
/// package it would take the whole host process (containerd) down.
#[test]
fn deeply_nested_names_fail_cleanly() {
    require_root!();
    let names = [
        ("2000 directories", "a/".repeat(2_000) + "f"),
        ("200k directories", "a/".repeat(200_000) + "f"),
        ("150k symlinks to .", "self/".repeat(150_000) + "f"),
        (
            "100k `..`",
            "../".repeat(100_000) + &"a/".repeat(100_000) + "f",
        ),
    ];
    let mut failures = Vec::new();
    for (what, name) in &names {
        let mut e = Entry::new(b'0', name.as_bytes());
        e.name_via = Carrier::GnuLong;
        e.data = b"x".to_vec();
        let layer = encode(&[e]);

        // In a child process first, so an abort shows as a failure of this case only.
        let sb = Sandbox::new();
        let before = sb.snapshot();
        let scratch = tempfile::tempdir().unwrap();
        let layer_path = scratch.path().join("layer.tar");
        fs::write(&layer_path, &layer).unwrap();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_layerdiff"))
            .arg("apply")
            .arg(&layer_path)
            .arg(sb.root())
            .stdout(std::process::Stdio::null())
            // A file, not a pipe: the message may quote the whole (huge) name.
            .stderr(fs::File::create(scratch.path().join("stderr")).unwrap())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + HANG_AFTER;
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break Some(s);
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr =
            String::from_utf8_lossy(&fs::read(scratch.path().join("stderr")).unwrap()).into_owned();
        if stderr.chars().count() > 300 {
            let head: String = stderr.chars().take(150).collect();
            let tail: String = stderr
                .chars()
                .rev()
                .take(150)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            stderr = format!("{head}...{tail}");
        }
        match status {
            None => failures.push(format!("{what}: the CLI hung")),
            Some(s) if s.code().is_none() => {
                failures.push(format!("{what}: the CLI died ({s}): {}", stderr.trim()))
            }
            Some(s) if !s.success() && stderr.trim().is_empty() => {
                failures.push(format!("{what}: failed ({s}) without saying why"))
            }
            _ => {}
        }
        for d in diff_snapshots(&before, &sb.snapshot()) {
            failures.push(format!("{what}: outside the root: {d}"));
        }
        if !failures.is_empty() {
            continue;
        }

        // In process, with both resolvers, on a thread with the default (small) stack.
        for resolver in [Resolver::Auto, Resolver::Walk] {
            let sb = Sandbox::new();
            let (problems, _) = check_layer(layer.clone(), WhiteoutMode::Remove, resolver, &sb);
            for p in problems {
                failures.push(format!("{what} ({resolver:?} resolver): {p}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A whiteout of a directory tree ~1800 levels deep (as deep as names under PATH_MAX allow)
/// succeeds, as containerd's does, also for a CLI started with the common soft limit of 1024
/// open files: Go raises its soft limit to the hard one at startup, and the removal holds one
/// descriptor per level.
#[test]
fn whiteout_of_a_very_deep_tree_under_a_low_fd_limit() {
    require_root!();
    let deep = "a/".repeat(1800) + "f";
    let mut failures = Vec::new();
    for (what, whiteout) in [("whiteout", ".wh.a"), ("opaque whiteout", ".wh..wh..opq")] {
        let mut file = Entry::new(b'0', deep.as_bytes());
        file.name_via = Carrier::Pax;
        file.data = b"x".to_vec();
        let layer = encode(&[file, Entry::new(b'0', whiteout.as_bytes())]);
        let sb = Sandbox::new();
        let scratch = tempfile::tempdir().unwrap();
        let layer_path = scratch.path().join("layer.tar");
        fs::write(&layer_path, &layer).unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg("ulimit -S -n 1024 && exec \"$0\" apply \"$1\" \"$2\"")
            .arg(env!("CARGO_BIN_EXE_layerdiff"))
            .arg(&layer_path)
            .arg(sb.root())
            .output()
            .unwrap();
        if !out.status.success() {
            failures.push(format!(
                "{what}: {} {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        } else if fs::symlink_metadata(sb.root().join("a")).is_ok() {
            failures.push(format!("{what}: the tree is still there"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
