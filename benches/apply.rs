//! Benchmark (not a test): apply a gzip layer of a generated rootfs-like tree (~10k files,
//! ~150 MB) with layerdiff and with `tar -xzf`, alternating, in one run; prints medians and
//! the ratio. `cargo bench --bench apply` (needs root for owners and devices).

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use layerdiff::{apply, ApplyOptions};

// The tests' seeded PRNG, so the layer is the same every run. (Only part of it is used here.)
#[path = "../tests/common/rng.rs"]
#[allow(dead_code)]
mod rng;
use rng::Rng;

/// File data that compresses roughly like a mix of binaries and text (about 2.5:1).
fn content(rng: &mut Rng, len: usize) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "lib", "usr", "share", "config", "the", "value", "int", "return", "static", "\n", "  ",
        "0x", "struct",
    ];
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        if rng.below(6) == 0 {
            for _ in 0..6 {
                out.push(rng.next() as u8);
            }
        } else {
            out.extend_from_slice(WORDS[rng.below(WORDS.len() as u64) as usize].as_bytes());
        }
    }
    out.truncate(len);
    out
}

fn build_layer(path: &Path) -> (usize, u64) {
    let mut rng = Rng::new(0);
    let gz =
        flate2::write::GzEncoder::new(fs::File::create(path).unwrap(), flate2::Compression::new(6));
    let mut tb = tar::Builder::new(gz);
    let mut files = 0usize;
    let mut bytes = 0u64;
    let mut dirs: Vec<String> = Vec::new();
    for top in [
        "bin",
        "etc",
        "lib",
        "usr/bin",
        "usr/lib",
        "usr/share/doc",
        "usr/share/locale",
        "var/lib",
    ] {
        let mut acc = String::new();
        for part in top.split('/') {
            acc = if acc.is_empty() {
                part.to_string()
            } else {
                format!("{acc}/{part}")
            };
            if !dirs.contains(&acc) {
                dirs.push(acc.clone());
            }
        }
    }
    for i in 0..700 {
        let parent = dirs[rng.below(dirs.len() as u64) as usize].clone();
        dirs.push(format!("{parent}/d{i}"));
    }
    for d in &dirs {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_mtime(1_700_000_000);
        h.set_size(0);
        tb.append_data(&mut h, format!("{d}/"), &[][..]).unwrap();
    }
    while files < 10_000 {
        let d = &dirs[rng.below(dirs.len() as u64) as usize];
        let name = format!("{d}/f{files}");
        let kind = rng.below(20);
        let mut h = tar::Header::new_ustar();
        h.set_mtime(1_700_000_000 + rng.below(1000));
        h.set_uid(rng.below(3));
        h.set_gid(rng.below(3));
        if kind == 0 {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_mode(0o777);
            h.set_size(0);
            h.set_link_name(format!("../f{}", rng.below(files as u64 + 1)))
                .unwrap();
            tb.append_data(&mut h, &name, &[][..]).unwrap();
        } else {
            // Mostly small files, a few large ones: ~15 KB on average.
            let len = if rng.below(100) == 0 {
                400_000 + rng.below(800_000)
            } else {
                rng.below(24_000)
            } as usize;
            let data = content(&mut rng, len);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(if rng.below(4) == 0 { 0o755 } else { 0o644 });
            h.set_size(len as u64);
            tb.append_data(&mut h, &name, &data[..]).unwrap();
            bytes += len as u64;
        }
        files += 1;
    }
    let gz = tb.into_inner().unwrap();
    gz.finish().unwrap().flush().unwrap();
    (files, bytes)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn drop_tree(p: &Path) {
    if p.exists() {
        fs::remove_dir_all(p).unwrap();
    }
    fs::create_dir_all(p).unwrap();
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if let Ok(out) = std::env::var("APPLY_BENCH_LAYER_OUT") {
        let (files, bytes) = build_layer(Path::new(&out));
        println!("wrote {out}: {files} entries, {bytes} bytes of file data");
        return;
    }
    let work = tempfile::Builder::new()
        .prefix("layerdiff-bench-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let layer = work.path().join("layer.tar.gz");
    let t = Instant::now();
    let (files, bytes) = build_layer(&layer);
    let size = fs::metadata(&layer).unwrap().len();
    println!(
        "layer: {files} entries, {:.1} MB of file data, {:.1} MB gzip (built in {:.1?})",
        bytes as f64 / 1e6,
        size as f64 / 1e6,
        t.elapsed()
    );

    // APPLY_BENCH_TMPFS=1 unpacks into a tmpfs, isolating CPU work from disk writeback noise.
    let tmpfs = std::env::var("APPLY_BENCH_TMPFS").is_ok_and(|v| v == "1");
    let dest = work.path().join("dest");
    fs::create_dir_all(&dest).unwrap();
    if tmpfs {
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=3g", "tmpfs"])
            .arg(&dest)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs");
        println!("unpacking into tmpfs");
    }
    let iters: usize = std::env::var("APPLY_BENCH_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let (ours_dir, tar_dir) = (dest.join("ours"), dest.join("tar"));
    let mut ours = Vec::new();
    let mut gnu = Vec::new();
    for i in 0..iters {
        drop_tree(&ours_dir);
        Command::new("sync").status().unwrap();
        let t = Instant::now();
        let f = fs::File::open(&layer).unwrap();
        apply(&ours_dir, f, &ApplyOptions::default()).unwrap();
        ours.push(t.elapsed());

        drop_tree(&tar_dir);
        Command::new("sync").status().unwrap();
        let t = Instant::now();
        let st = Command::new("tar")
            .arg("-xzf")
            .arg(&layer)
            .arg("-C")
            .arg(&tar_dir)
            .arg("--same-owner")
            .status()
            .unwrap();
        assert!(st.success());
        gnu.push(t.elapsed());
        println!(
            "  run {i}: layerdiff {:.3?}  tar -xzf {:.3?}",
            ours[i], gnu[i]
        );
    }
    if tmpfs {
        let _ = Command::new("umount").arg(&dest).status();
    }
    let (mo, mt) = (median(ours), median(gnu));
    println!(
        "median: layerdiff apply {:.3?}, tar -xzf {:.3?}, ratio layerdiff/tar = {:.2}",
        mo,
        mt,
        mo.as_secs_f64() / mt.as_secs_f64()
    );
}
