//! A root to apply into, with a sentinel beside it, so that a write outside shows.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use layerdiff::{apply, Applied, ApplyOptions, Result};

pub fn apply_bytes(root: &Path, layer: &[u8], opts: &ApplyOptions) -> Result<Applied> {
    apply(root, layer, opts)
}

pub fn default_opts() -> ApplyOptions {
    ApplyOptions::default()
}

/// A fresh directory holding `root/` and a sentinel sibling.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("root")).unwrap();
        fs::write(dir.path().join("outside-sentinel"), b"untouched").unwrap();
        Sandbox { dir }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// `rel` inside the root.
    pub fn p(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }

    /// containerd's breakout fixture: `etc/passwd` reading "inside".
    pub fn etc_tree(&self) {
        fs::create_dir(self.p("etc")).unwrap();
        fs::write(self.p("etc/passwd"), "inside").unwrap();
    }

    /// Nothing beside the root changed.
    pub fn assert_outside_untouched(&self) {
        let mut names: Vec<_> = fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["outside-sentinel", "root"],
            "something was written beside the root"
        );
        assert_eq!(
            fs::read(self.dir.path().join("outside-sentinel")).unwrap(),
            b"untouched"
        );
    }
}

/// The same inode (hardlinks of each other).
pub fn same_file(a: &Path, b: &Path) -> bool {
    let (ma, mb) = (fs::metadata(a).unwrap(), fs::metadata(b).unwrap());
    ma.ino() == mb.ino() && ma.dev() == mb.dev()
}
