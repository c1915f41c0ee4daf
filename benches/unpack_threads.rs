//! Benchmark (not a test): apply a many-small-files layer (uncompressed tar; default 20,000
//! files of 1-8 KiB in 200 directories) with `unpack_threads` 1, 2 and 4, interleaved, onto
//! the disk (a directory under /var/tmp) and onto a tmpfs; prints every run, the medians and
//! the ratios to 1 thread. Between runs, untimed: the tree is removed, `sync`, and the page
//! cache is dropped (writeback of the previous run never lands in the next one).
//! `cargo bench --bench unpack_threads` (needs root: owners, the tmpfs mount).
//! Knobs: UNPACK_BENCH_ITERS (default 5), UNPACK_BENCH_FILES (20000), UNPACK_BENCH_THREADS
//! ("1,2,4"), UNPACK_BENCH_DISK (the disk directory, default /var/tmp).

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use layerdiff::{apply, ApplyOptions};

#[path = "../tests/common/rng.rs"]
#[allow(dead_code)]
mod rng;
use rng::Rng;

const DIRS: usize = 200;

fn env_or<T: std::str::FromStr>(k: &str, d: T) -> T {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

/// A layer as `tar` writes a tree: each directory, then its files.
fn build_layer(files: usize) -> Vec<u8> {
    let mut rng = Rng::new(13);
    let mut tb = tar::Builder::new(Vec::new());
    let per_dir = files.div_ceil(DIRS);
    let mut n = 0;
    for d in 0..DIRS {
        let dir = format!("usr/share/d{:03}/", d);
        if d == 0 {
            for p in ["usr/", "usr/share/"] {
                let mut h = tar::Header::new_ustar();
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_mtime(1_700_000_000);
                h.set_size(0);
                tb.append_data(&mut h, p, &[][..]).unwrap();
            }
        }
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_mtime(1_700_000_000);
        h.set_size(0);
        tb.append_data(&mut h, &dir, &[][..]).unwrap();
        for _ in 0..per_dir {
            if n == files {
                break;
            }
            let len = 1024 + rng.below(7 * 1024) as usize;
            let data: Vec<u8> = (0..len).map(|i| (i as u8) ^ (n as u8)).collect();
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_uid(rng.below(3));
            h.set_gid(rng.below(3));
            h.set_mtime(1_700_000_000 + rng.below(1000));
            h.set_size(len as u64);
            tb.append_data(&mut h, format!("{dir}f{n}"), &data[..])
                .unwrap();
            n += 1;
        }
    }
    tb.into_inner().unwrap()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A new empty `p` (an old one removed), written back and out of the page cache.
fn settle(p: &Path) {
    if p.exists() {
        fs::remove_dir_all(p).unwrap();
    }
    fs::create_dir_all(p).unwrap();
    Command::new("sync").status().unwrap();
    let _ = fs::write("/proc/sys/vm/drop_caches", "3");
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let iters: usize = env_or("UNPACK_BENCH_ITERS", 5);
    let files: usize = env_or("UNPACK_BENCH_FILES", 20_000);
    let threads: Vec<usize> = std::env::var("UNPACK_BENCH_THREADS")
        .unwrap_or_else(|_| "1,2,4".into())
        .split(',')
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let disk_base: String = env_or("UNPACK_BENCH_DISK", "/var/tmp".to_string());
    let layer = build_layer(files);
    println!(
        "layer: {files} files of 1-8 KiB in {DIRS} dirs, {:.1} MB tar; {iters} runs each",
        layer.len() as f64 / 1e6
    );

    let disk = tempfile::Builder::new()
        .prefix("layerdiff-unpack-bench-")
        .tempdir_in(&disk_base)
        .unwrap();
    let tmpfs = tempfile::Builder::new()
        .prefix("layerdiff-unpack-bench-tmpfs-")
        .tempdir_in(&disk_base)
        .unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2g", "tmpfs"])
        .arg(tmpfs.path())
        .status()
        .unwrap();
    assert!(st.success(), "mount tmpfs");

    for (label, base) in [("disk", disk.path()), ("tmpfs", tmpfs.path())] {
        let df = Command::new("df")
            .args(["--output=fstype", "-h"])
            .arg(base)
            .output()
            .unwrap();
        let fstype = String::from_utf8_lossy(&df.stdout)
            .lines()
            .nth(1)
            .unwrap_or("?")
            .trim()
            .to_string();
        println!("{label} ({fstype}, {}):", base.display());
        let mut times: Vec<Vec<Duration>> = vec![Vec::new(); threads.len()];
        for i in 0..iters {
            let mut line = format!("  run {i}:");
            for (k, &t) in threads.iter().enumerate() {
                // A new directory on the disk (see above); the tmpfs reuses one.
                let dest = if label == "disk" {
                    base.join(format!("root-{i}-{t}"))
                } else {
                    base.join("root")
                };
                settle(&dest);
                let opts = ApplyOptions {
                    unpack_threads: t,
                    ..ApplyOptions::default()
                };
                let start = Instant::now();
                apply(&dest, layer.as_slice(), &opts).unwrap();
                let el = start.elapsed();
                times[k].push(el);
                line += &format!("  {t} thr {:.3}s", el.as_secs_f64());
            }
            println!("{line}");
        }
        let base_median = median(times[0].clone()).as_secs_f64();
        let mut line = "  median:".to_string();
        for (k, &t) in threads.iter().enumerate() {
            let m = median(times[k].clone()).as_secs_f64();
            line += &format!("  {t} thr {m:.3}s ({:.2}x)", base_median / m);
        }
        println!("{line}");
    }
    let _ = Command::new("umount").arg(tmpfs.path()).status();
}
