//! Benchmark (not a test): `layerdiff::compare` with gzip against `tar -cf - DIR | gzip -6` on a
//! rootfs-like tree (~10k files, ~150 MB, small and large files, some incompressible), in the
//! same run. Prints medians and the ratio. Run with `cargo bench --bench diff`.
//!
//! Environment: BENCH_RUNS (default 3), BENCH_SCALE (default 1.0, multiplies the tree size).

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use layerdiff::{compare, CompareOptions, Compression};

// The tests' seeded PRNG, so the tree is the same every run. (Only part of it is used here.)
#[path = "../tests/common/rng.rs"]
#[allow(dead_code)]
mod rng;
use rng::Rng;

const WORDS: &[&str] = &[
    "lib", "usr", "share", "config", "return", "static", "int", "void", "struct", "the", "of",
    "#include", "function", "license", "0x7f", "error", "version", "=", "{", "}", "\n", "  ",
];

fn text(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        out.extend_from_slice(WORDS[rng.below(WORDS.len() as u64) as usize].as_bytes());
        out.push(b' ');
    }
    out.truncate(len);
    out
}

fn random(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A rootfs-like tree: ~10k files in ~500 directories; mostly small text files, some medium
/// binaries, a few large ones; about a fifth of the bytes incompressible. Returns total bytes.
fn build_tree(root: &Path, scale: f64) -> u64 {
    let mut rng = Rng::new(0);
    let files = (10_000.0 * scale) as usize;
    let dirs = (500.0 * scale).max(1.0) as usize;
    let mut total = 0u64;
    for d in 0..dirs {
        let depth = 1 + d % 4;
        let mut p = root.to_path_buf();
        for level in 0..depth {
            p.push(format!("dir{}_{}", level, (d + level * 7) % dirs));
        }
        fs::create_dir_all(&p).unwrap();
    }
    let mut dir_list: Vec<_> = walk_dirs(root);
    dir_list.sort();
    for i in 0..files {
        let dir = &dir_list[rng.below(dir_list.len() as u64) as usize];
        let kind = rng.below(1000);
        let (len, incompressible) = match kind {
            0..=799 => (256 + rng.below(8 * 1024) as usize, false),
            800..=949 => (8 * 1024 + rng.below(32 * 1024) as usize, rng.below(3) == 0),
            950..=997 => (
                32 * 1024 + rng.below(128 * 1024) as usize,
                rng.below(2) == 0,
            ),
            _ => (
                1024 * 1024 + rng.below(2 * 1024 * 1024) as usize,
                rng.below(2) == 0,
            ),
        };
        let data = if incompressible {
            random(&mut rng, len)
        } else {
            text(&mut rng, len)
        };
        total += data.len() as u64;
        fs::write(dir.join(format!("file{i}.so")), data).unwrap();
        if i % 50 == 0 {
            std::os::unix::fs::symlink(format!("file{i}.so"), dir.join(format!("link{i}")))
                .unwrap();
        }
    }
    total
}

fn walk_dirs(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![root.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        for e in fs::read_dir(&out[i]).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                out.push(e.path());
            }
        }
        i += 1;
    }
    out
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time_ours(lower: &Path, upper: &Path, compression: Compression) -> (Duration, u64) {
    let start = Instant::now();
    let out = fs::File::create("/dev/null").unwrap();
    let d = compare(
        lower,
        upper,
        out,
        &CompareOptions {
            compression,
            ..Default::default()
        },
    )
    .expect("compare");
    (start.elapsed(), d.size)
}

fn time_shell(script: &str, dir: &Path) -> Duration {
    let start = Instant::now();
    let status = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .arg(dir)
        .status()
        .unwrap();
    assert!(status.success(), "{script} failed");
    start.elapsed()
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing we need to honour.
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let scale: f64 = std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let tmp = tempfile::tempdir().unwrap();
    let lower = tmp.path().join("lower");
    let upper = tmp.path().join("rootfs");
    fs::create_dir(&lower).unwrap();
    fs::create_dir(&upper).unwrap();
    let bytes = build_tree(&upper, scale);
    println!(
        "tree: {} files+links, {:.1} MB in {}",
        walk_count(&upper),
        bytes as f64 / 1e6,
        tmp.path().display()
    );

    let gzip_baseline = "tar -cf - -C \"$1\" . | gzip -6 > /dev/null";
    // Through a pipe: GNU tar skips reading files when it writes to /dev/null itself.
    let tar_baseline = "tar -cf - -C \"$1\" . | cat > /dev/null";
    // Warm the page cache.
    time_shell(tar_baseline, &upper);
    time_ours(&lower, &upper, Compression::None);

    let mut results: Vec<(&str, Vec<Duration>)> = vec![
        ("layerdiff gzip-6", vec![]),
        ("tar | gzip -6", vec![]),
        ("layerdiff zstd-3", vec![]),
        ("layerdiff none", vec![]),
        ("tar (no compression)", vec![]),
    ];
    let mut sizes = (0, 0, 0);
    for _ in 0..runs {
        let (t, s) = time_ours(&lower, &upper, Compression::Gzip { level: 6 });
        results[0].1.push(t);
        sizes.0 = s;
        results[1].1.push(time_shell(gzip_baseline, &upper));
        let (t, s) = time_ours(&lower, &upper, Compression::Zstd { level: 3 });
        results[2].1.push(t);
        sizes.1 = s;
        let (t, s) = time_ours(&lower, &upper, Compression::None);
        results[3].1.push(t);
        sizes.2 = s;
        results[4].1.push(time_shell(tar_baseline, &upper));
    }
    let medians: Vec<(&str, Duration)> = results.into_iter().map(|(n, v)| (n, median(v))).collect();
    for (name, m) in &medians {
        println!(
            "{name:>22}: median {:>8.3} s  ({:.0} MB/s)",
            m.as_secs_f64(),
            bytes as f64 / 1e6 / m.as_secs_f64()
        );
    }
    println!(
        "output sizes: gzip {} B, zstd {} B, tar {} B",
        sizes.0, sizes.1, sizes.2
    );
    println!(
        "RATIO (tar | gzip -6) / (layerdiff gzip-6) = {:.2}x  [{} runs, medians, {} cores]",
        medians[1].1.as_secs_f64() / medians[0].1.as_secs_f64(),
        runs,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
}

fn walk_count(root: &Path) -> usize {
    walk_dirs(root)
        .iter()
        .map(|d| fs::read_dir(d).unwrap().count())
        .sum()
}
