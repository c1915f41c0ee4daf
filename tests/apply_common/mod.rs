//! Shared helpers of the apply tests: a hand-written tar builder (so tests control every
//! header byte) and small tree helpers.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use layerdiff::{apply, Applied, ApplyOptions, Result};

/// Fail loudly (not silently pass) when not root: these tests need mknod/chown/xattrs.
pub fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "apply tests must run as root (mknod, chown, trusted.* xattrs)"
    );
}

#[derive(Clone)]
pub struct H {
    pub name: Vec<u8>,
    pub typeflag: u8,
    pub mode: u64,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub linkname: Vec<u8>,
    pub devmajor: u64,
    pub devminor: u64,
    pub size: Option<u64>,
}

pub fn h(typeflag: u8, name: &str) -> H {
    H {
        name: name.as_bytes().to_vec(),
        typeflag,
        mode: if typeflag == b'5' { 0o755 } else { 0o644 },
        uid: 0,
        gid: 0,
        mtime: 1_600_000_000,
        linkname: Vec::new(),
        devmajor: 0,
        devminor: 0,
        size: None,
    }
}

fn octal(field: &mut [u8], v: u64) {
    let s = format!("{:0width$o}", v, width = field.len() - 1);
    assert!(s.len() < field.len(), "value {v} does not fit");
    field[..s.len()].copy_from_slice(s.as_bytes());
    field[s.len()] = 0;
}

pub fn fix_checksum(blk: &mut [u8]) {
    blk[148..156].copy_from_slice(b"        ");
    let sum: u64 = blk.iter().map(|&b| b as u64).sum();
    let s = format!("{sum:06o}\0 ");
    blk[148..156].copy_from_slice(s.as_bytes());
}

/// A tar stream under construction.
#[derive(Default)]
pub struct Tar {
    pub buf: Vec<u8>,
}

impl Tar {
    pub fn new() -> Self {
        Tar::default()
    }

    pub fn header_block(hd: &H, size: u64) -> [u8; 512] {
        let mut b = [0u8; 512];
        let n = hd.name.len().min(100);
        b[..n].copy_from_slice(&hd.name[..n]);
        octal(&mut b[100..108], hd.mode);
        octal(&mut b[108..116], hd.uid);
        octal(&mut b[116..124], hd.gid);
        octal(&mut b[124..136], size);
        octal(&mut b[136..148], hd.mtime);
        b[156] = hd.typeflag;
        let l = hd.linkname.len().min(100);
        b[157..157 + l].copy_from_slice(&hd.linkname[..l]);
        b[257..263].copy_from_slice(b"ustar\0");
        b[263..265].copy_from_slice(b"00");
        octal(&mut b[329..337], hd.devmajor);
        octal(&mut b[337..345], hd.devminor);
        fix_checksum(&mut b);
        b
    }

    pub fn raw(mut self, bytes: &[u8]) -> Self {
        self.buf.extend_from_slice(bytes);
        self
    }

    fn pad(&mut self) {
        let rem = self.buf.len() % 512;
        if rem != 0 {
            self.buf.resize(self.buf.len() + 512 - rem, 0);
        }
    }

    pub fn entry(mut self, hd: H, data: &[u8]) -> Self {
        let size = hd.size.unwrap_or(data.len() as u64);
        let blk = Self::header_block(&hd, size);
        self.buf.extend_from_slice(&blk);
        self.buf.extend_from_slice(data);
        self.pad();
        self
    }

    /// A PAX extended header with the given records, applying to the next entry.
    pub fn pax(self, records: &[(&str, &[u8])]) -> Self {
        let mut data = Vec::new();
        for (k, v) in records {
            let body_len = k.len() + v.len() + 3;
            let mut len = body_len + body_len.to_string().len();
            if (len).to_string().len() != body_len.to_string().len() {
                len = body_len + len.to_string().len();
            }
            data.extend_from_slice(format!("{len} {k}=").as_bytes());
            data.extend_from_slice(v);
            data.push(b'\n');
        }
        let hd = h(b'x', "PaxHeaders.0/x");
        self.entry(hd, &data)
    }

    /// A GNU long name ('L') or long link ('K') header.
    pub fn gnu_long(mut self, typeflag: u8, name: &[u8]) -> Self {
        let mut hd = h(typeflag, "././@LongLink");
        let mut data = name.to_vec();
        data.push(0);
        hd.size = Some(data.len() as u64);
        let mut blk = Self::header_block(&hd, data.len() as u64);
        blk[257..263].copy_from_slice(b"ustar ");
        blk[263..265].copy_from_slice(b" \0");
        fix_checksum(&mut blk);
        self.buf.extend_from_slice(&blk);
        self.buf.extend_from_slice(&data);
        self.pad();
        self
    }

    pub fn dir(self, name: &str) -> Self {
        self.entry(h(b'5', name), b"")
    }
    pub fn file(self, name: &str, data: &[u8]) -> Self {
        self.entry(h(b'0', name), data)
    }
    pub fn file_mode(self, name: &str, data: &[u8], mode: u64) -> Self {
        let mut hd = h(b'0', name);
        hd.mode = mode;
        self.entry(hd, data)
    }
    pub fn symlink(self, target: &str, name: &str) -> Self {
        let mut hd = h(b'2', name);
        hd.linkname = target.as_bytes().to_vec();
        hd.mode = 0o777;
        self.entry(hd, b"")
    }
    pub fn link(self, target: &str, name: &str) -> Self {
        let mut hd = h(b'1', name);
        hd.linkname = target.as_bytes().to_vec();
        self.entry(hd, b"")
    }
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&[0u8; 1024]);
        self.buf
    }
}

pub fn apply_bytes(root: &Path, layer: &[u8], opts: &ApplyOptions) -> Result<Applied> {
    apply(root, layer, opts)
}

pub fn default_opts() -> ApplyOptions {
    ApplyOptions::default()
}

/// A fresh directory holding `root/` and a sentinel sibling, so writes outside show.
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
    pub fn p(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
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

pub fn same_file(a: &Path, b: &Path) -> bool {
    let (ma, mb) = (fs::metadata(a).unwrap(), fs::metadata(b).unwrap());
    ma.ino() == mb.ino() && ma.dev() == mb.dev()
}
