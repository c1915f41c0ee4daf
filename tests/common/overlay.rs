//! Real overlay mounts for the tests that use the kernel as the oracle (root only).

use std::path::{Path, PathBuf};

/// An overlay mount, lazily unmounted when dropped (also when the test fails).
pub struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Mount an overlay of `lower` and `upper` on `merged`, with the extra mount options `opts`
/// ("" for none, else comma-separated).
pub fn mount_overlay(lower: &Path, upper: &Path, work: &Path, merged: &Path, opts: &str) -> Mount {
    let mut data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    if !opts.is_empty() {
        data.push(',');
        data.push_str(opts);
    }
    let status = std::process::Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &data])
        .arg(merged)
        .status()
        .unwrap();
    assert!(status.success(), "mount -t overlay -o {data} failed");
    Mount(merged.to_path_buf())
}
