//! Randomized adversarial apply: seeded hostile layers (`..`, absolute names, symlinks out of
//! the root, chains and loops, hardlinks through symlinks, whiteouts through symlinked dirs,
//! dirs replaced by symlinks mid-layer, PAX and GNU long names, devices, fifos, xattrs, odd
//! numbers) applied in both whiteout modes, with the openat2 resolver and its fallback walk.
//! Each must return (Ok or a non-internal Err) without panicking or hanging, and leave the
//! sandbox around the root — a sentinel tree, the sandbox directory itself, `/` and `/tmp` —
//! exactly as it was. A second test feeds byte-mutated and truncated tar/gzip/zstd layers.
//!
//! A failure prints the seed, the mode and the entry list of every failing layer.

mod apply_common;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use apply_common::{fix_checksum, require_root};
use layerdiff::{apply, Applied, ApplyOptions, ErrorKind, Resolver, WhiteoutMode};

/// Sandboxes per whiteout mode in the hostile test.
const SEEDS: u64 = 300;
/// Layers applied one after another onto each sandbox.
const LAYERS_PER_SEED: usize = 3;
/// Mutated layers in the corruption test.
const MUTATIONS: u64 = 400;
/// An apply that takes longer than this is a hang (the layers are a few KiB).
const HANG_AFTER: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// A small deterministic PRNG (xorshift64*), so a failing seed reproduces exactly.

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // splitmix64 of the seed: nearby seeds give unrelated streams, never zero.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// True with probability `pct`%.
    fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Layer entries and their encoding (a hand-written writer, so every header byte is ours).

/// How the entry's name (or link name) reaches the reader.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Carrier {
    /// In the USTAR header (split into prefix/name when longer than 100 bytes).
    Header,
    /// A PAX `path`/`linkpath` record; the header holds a decoy.
    Pax,
    /// A GNU `L`/`K` long-name entry; the header holds the truncated name.
    GnuLong,
}

#[derive(Clone)]
struct Entry {
    typeflag: u8,
    name: Vec<u8>,
    name_via: Carrier,
    linkname: Vec<u8>,
    link_via: Carrier,
    mode: u64,
    uid: Num,
    gid: Num,
    mtime: Num,
    devmajor: Num,
    devminor: Num,
    data: Vec<u8>,
    /// Extra PAX records (xattrs, fractional times, ...).
    pax: Vec<(String, Vec<u8>)>,
}

/// A numeric header field: octal when it fits, else base-256, or a PAX record.
#[derive(Debug, Clone, PartialEq)]
enum Num {
    Plain(i64),
    Pax(String),
}

impl Entry {
    fn new(typeflag: u8, name: &[u8]) -> Entry {
        Entry {
            typeflag,
            name: name.to_vec(),
            name_via: Carrier::Header,
            linkname: Vec::new(),
            link_via: Carrier::Header,
            mode: if typeflag == b'5' { 0o755 } else { 0o644 },
            uid: Num::Plain(0),
            gid: Num::Plain(0),
            mtime: Num::Plain(1_600_000_000),
            devmajor: Num::Plain(0),
            devminor: Num::Plain(0),
            data: Vec::new(),
            pax: Vec::new(),
        }
    }
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        write!(f, "{:?} {:?}", self.typeflag as char, s(&self.name))?;
        if self.name_via != Carrier::Header {
            write!(f, " (name via {:?})", self.name_via)?;
        }
        if !self.linkname.is_empty() {
            write!(f, " -> {:?}", s(&self.linkname))?;
            if self.link_via != Carrier::Header {
                write!(f, " (via {:?})", self.link_via)?;
            }
        }
        write!(
            f,
            " mode {:o} uid {:?} gid {:?} mtime {:?}",
            self.mode, self.uid, self.gid, self.mtime
        )?;
        if matches!(self.typeflag, b'3' | b'4') {
            write!(f, " dev {:?}:{:?}", self.devmajor, self.devminor)?;
        }
        if !self.data.is_empty() {
            write!(f, " data {} bytes", self.data.len())?;
        }
        for (k, v) in &self.pax {
            write!(f, " pax {k}={:?}", s(v))?;
        }
        Ok(())
    }
}

fn describe(entries: &[Entry]) -> String {
    let mut out = String::new();
    for (i, e) in entries.iter().enumerate() {
        let _ = writeln!(out, "    {i:2}: {e:?}");
    }
    out
}

/// Write `v` into a numeric field: octal when it fits (with a NUL), else base-256.
fn put_num(field: &mut [u8], v: i64) {
    let digits = field.len() - 1;
    if v >= 0 && (v as u64) < 1u64 << (3 * digits) {
        let s = format!("{:0digits$o}", v);
        field[..digits].copy_from_slice(s.as_bytes());
        field[digits] = 0;
        return;
    }
    // Base-256, two's complement, big-endian, high bit of the first byte set.
    let bytes = v.to_be_bytes();
    let n = field.len();
    let fill = if v < 0 { 0xff } else { 0 };
    for b in field.iter_mut() {
        *b = fill;
    }
    let k = n.min(8);
    field[n - k..].copy_from_slice(&bytes[8 - k..]);
    field[0] |= 0x80;
}

fn pad_to_block(buf: &mut Vec<u8>) {
    let rem = buf.len() % 512;
    if rem != 0 {
        buf.resize(buf.len() + 512 - rem, 0);
    }
}

fn pax_records(records: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in records {
        let body = k.len() + v.len() + 3; // ' ', '=', '\n'
        let mut len = body + body.to_string().len();
        if len.to_string().len() != body.to_string().len() {
            len = body + len.to_string().len();
        }
        out.extend_from_slice(format!("{len} {k}=").as_bytes());
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

/// One raw header block (USTAR or GNU magic), checksummed.
#[allow(clippy::too_many_arguments)]
fn header_block(
    typeflag: u8,
    name: &[u8],
    prefix: &[u8],
    linkname: &[u8],
    mode: u64,
    nums: [i64; 6], // uid, gid, size, mtime, devmajor, devminor
    gnu: bool,
) -> [u8; 512] {
    let mut b = [0u8; 512];
    let n = name.len().min(100);
    b[..n].copy_from_slice(&name[..n]);
    put_num(&mut b[100..108], (mode & 0o7777777) as i64);
    put_num(&mut b[108..116], nums[0]);
    put_num(&mut b[116..124], nums[1]);
    put_num(&mut b[124..136], nums[2]);
    put_num(&mut b[136..148], nums[3]);
    b[156] = typeflag;
    let l = linkname.len().min(100);
    b[157..157 + l].copy_from_slice(&linkname[..l]);
    if gnu {
        b[257..263].copy_from_slice(b"ustar ");
        b[263..265].copy_from_slice(b" \0");
    } else {
        b[257..263].copy_from_slice(b"ustar\0");
        b[263..265].copy_from_slice(b"00");
        let p = prefix.len().min(155);
        b[345..345 + p].copy_from_slice(&prefix[..p]);
    }
    put_num(&mut b[329..337], nums[4]);
    put_num(&mut b[337..345], nums[5]);
    fix_checksum(&mut b);
    b
}

fn plain(n: &Num, pax: &mut Vec<(String, Vec<u8>)>, key: &str) -> i64 {
    match n {
        Num::Plain(v) => *v,
        Num::Pax(s) => {
            pax.push((key.to_string(), s.as_bytes().to_vec()));
            0
        }
    }
}

/// USTAR split of a long name at a `/` (prefix ≤ 155, name ≤ 100), if there is one.
fn ustar_split(name: &[u8]) -> Option<(&[u8], &[u8])> {
    if name.len() <= 100 {
        return Some((&[], name));
    }
    (1..name.len().min(156))
        .rev()
        .filter(|&i| name[i] == b'/')
        .map(|i| (&name[..i], &name[i + 1..]))
        .find(|(_, n)| !n.is_empty() && n.len() <= 100)
}

fn encode(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut pax = e.pax.clone();
        let uid = plain(&e.uid, &mut pax, "uid");
        let gid = plain(&e.gid, &mut pax, "gid");
        let mtime = plain(&e.mtime, &mut pax, "mtime");
        let devmajor = plain(&e.devmajor, &mut pax, "devmajor");
        let devminor = plain(&e.devminor, &mut pax, "devminor");

        let mut gnu = false;
        let (mut hname, mut prefix): (Vec<u8>, Vec<u8>) = (e.name.clone(), Vec::new());
        match e.name_via {
            Carrier::Header => {
                if let Some((p, n)) = ustar_split(&e.name) {
                    (prefix, hname) = (p.to_vec(), n.to_vec());
                }
            }
            Carrier::Pax => {
                pax.push(("path".into(), e.name.clone()));
                hname = b"decoy/../../decoy".to_vec();
            }
            Carrier::GnuLong => {
                gnu = true;
                gnu_long(&mut out, b'L', &e.name);
            }
        }
        let mut hlink = e.linkname.clone();
        match e.link_via {
            Carrier::Header => {}
            Carrier::Pax => {
                pax.push(("linkpath".into(), e.linkname.clone()));
                hlink = b"/decoy/link".to_vec();
            }
            Carrier::GnuLong => {
                gnu = true;
                gnu_long(&mut out, b'K', &e.linkname);
            }
        }
        if e.typeflag == b'g' {
            // A global header: its records are the "data".
            let data = pax_records(&pax);
            let blk = header_block(
                b'g',
                &hname,
                &prefix,
                b"",
                0o644,
                [0, 0, data.len() as i64, 0, 0, 0],
                false,
            );
            out.extend_from_slice(&blk);
            out.extend_from_slice(&data);
            pad_to_block(&mut out);
            continue;
        }
        if !pax.is_empty() {
            let data = pax_records(&pax);
            let blk = header_block(
                b'x',
                b"PaxHeaders.0/x",
                b"",
                b"",
                0o644,
                [0, 0, data.len() as i64, 0, 0, 0],
                false,
            );
            out.extend_from_slice(&blk);
            out.extend_from_slice(&data);
            pad_to_block(&mut out);
        }
        let size = e.data.len() as i64;
        let blk = header_block(
            e.typeflag,
            &hname,
            &prefix,
            &hlink,
            e.mode,
            [uid, gid, size, mtime, devmajor, devminor],
            gnu,
        );
        out.extend_from_slice(&blk);
        out.extend_from_slice(&e.data);
        pad_to_block(&mut out);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

fn gnu_long(out: &mut Vec<u8>, typeflag: u8, name: &[u8]) {
    let mut data = name.to_vec();
    data.push(0);
    let blk = header_block(
        typeflag,
        b"././@LongLink",
        b"",
        b"",
        0o644,
        [0, 0, data.len() as i64, 0, 0, 0],
        true,
    );
    out.extend_from_slice(&blk);
    out.extend_from_slice(&data);
    pad_to_block(out);
}

// ---------------------------------------------------------------------------------------------
// The sandbox: `outside/` (sentinels) beside `root/` (a pre-populated tree full of traps).

/// Names the generator uses; the distinctive ones are looked for in `/` and `/tmp` after
/// every apply.
const NAMES: &[&str] = &[
    "hx1", "hx2", "hx3", "nx1", "nx2", "out", "abs", "absout", "up", "upup", "self", "loop1",
    "loop2", "chain1", "dirlink", "flink", "rel", "fout", "fabs", "outside",
];
/// The distinctive ones among them (another process may well own a `/tmp/out`).
const STRAY_NAMES: &[&str] = &[
    "hx1", "hx2", "hx3", "nx1", "nx2", "absout", "loop1", "loop2", "chain1", "dirlink", "flink",
];
/// Components that are interesting but exist on every host (never checked for strays).
const HOST_NAMES: &[&str] = &["root", "tmp", "proc", "etc", "..", ".", ""];

struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::Builder::new()
            .prefix("hostile")
            .tempdir()
            .unwrap();
        let sb = Sandbox { dir };
        sb.populate();
        sb
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn root(&self) -> PathBuf {
        self.path().join("root")
    }
    fn outside(&self) -> PathBuf {
        self.path().join("outside")
    }

    fn populate(&self) {
        let o = self.outside();
        fs::create_dir(&o).unwrap();
        fs::write(o.join("hx1"), b"sentinel hx1").unwrap();
        fs::create_dir(o.join("hx2")).unwrap();
        fs::write(o.join("hx2/hx3"), b"sentinel hx2/hx3").unwrap();
        fs::create_dir(o.join("hx2/hx2")).unwrap();
        fs::write(o.join("hx3"), b"sentinel hx3").unwrap();
        symlink("/", o.join("abs")).unwrap();
        symlink("hx1", o.join("flink")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            o.join("fifo"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        for (p, mode, uid) in [
            ("hx1", 0o640, 1234),
            ("hx2", 0o750, 1235),
            ("hx2/hx3", 0o4711, 0),
            ("hx3", 0o600, 99),
        ] {
            let p = o.join(p);
            std::os::unix::fs::lchown(&p, Some(uid), Some(uid + 1)).unwrap();
            fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
        }
        xattr::set(o.join("hx1"), "user.sentinel", b"s1").unwrap();
        xattr::set(o.join("hx2"), "user.sentinel", b"s2").unwrap();

        let r = self.root();
        fs::create_dir(&r).unwrap();
        fs::create_dir(r.join("hx1")).unwrap();
        fs::write(r.join("hx1/hx2"), b"inside hx1/hx2").unwrap();
        fs::write(r.join("hx3"), b"inside hx3").unwrap();
        fs::create_dir(r.join("hx2")).unwrap();
        fs::hard_link(r.join("hx3"), r.join("hx2/hx3")).unwrap();
        let abs_outside = o.to_str().unwrap().to_string();
        let abs_outside_hx3 = format!("{abs_outside}/hx3");
        for (target, name) in [
            ("../outside", "out"),
            ("/", "abs"),
            (abs_outside.as_str(), "absout"),
            ("..", "up"),
            ("../..", "upup"),
            (".", "self"),
            ("loop2", "loop1"),
            ("loop1", "loop2"),
            ("out", "chain1"),
            ("hx1", "dirlink"),
            ("hx3", "flink"),
            ("hx1/../../outside", "rel"),
            ("../outside/hx1", "fout"),
            (abs_outside_hx3.as_str(), "fabs"),
        ] {
            symlink(target, r.join(name)).unwrap();
        }
        // Fixed times everywhere, so a later touch shows.
        set_times_tree(self.path());
    }

    /// Everything outside `root/`, and the identity of `root/` itself.
    fn snapshot(&self) -> BTreeMap<PathBuf, Meta> {
        let mut out = BTreeMap::new();
        let top = self.path();
        out.insert(PathBuf::from("."), Meta::of(top, false));
        let mut root_id = Meta::of(&self.root(), false);
        // Its contents may change; only the identity and type must not.
        root_id = Meta {
            mode: root_id.mode & 0o170000,
            ino: root_id.ino,
            ..Meta::default()
        };
        out.insert(PathBuf::from("root"), root_id);
        walk_snapshot(&self.outside(), Path::new("outside"), &mut out);
        out.insert(
            PathBuf::from("<entries>"),
            Meta {
                content: Some(list_names(top).join(&b'/').escape_ascii().to_string()),
                ..Meta::default()
            },
        );
        out
    }
}

fn set_times_tree(p: &Path) {
    let ts = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: 1_500_000_000,
            tv_nsec: 7,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: 1_500_000_000,
            tv_nsec: 7,
        },
    };
    let md = fs::symlink_metadata(p).unwrap();
    if md.is_dir() {
        for name in list_names(p) {
            set_times_tree(&p.join(std::ffi::OsStr::from_bytes(&name)));
        }
    }
    rustix::fs::utimensat(
        rustix::fs::CWD,
        p,
        &ts,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

fn list_names(p: &Path) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = fs::read_dir(p)
        .unwrap()
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .collect();
    v.sort();
    v
}

/// What must not change about one path (atime aside: reading is not writing).
#[derive(Debug, Default, PartialEq, Eq)]
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    nlink: u64,
    ino: u64,
    rdev: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    /// File data (escaped, so a difference reads well).
    content: Option<String>,
    link: Option<PathBuf>,
    xattrs: Vec<(OsString, Option<Vec<u8>>)>,
}

impl Meta {
    fn of(p: &Path, read: bool) -> Meta {
        let md = fs::symlink_metadata(p).unwrap();
        let ft = md.file_type();
        let mut xattrs: Vec<(OsString, Option<Vec<u8>>)> = xattr::list(p)
            .map(|l| {
                l.map(|k| {
                    let v = xattr::get(p, &k).ok().flatten();
                    (k, v)
                })
                .collect()
            })
            .unwrap_or_default();
        xattrs.sort();
        Meta {
            mode: md.mode(),
            uid: md.uid(),
            gid: md.gid(),
            size: md.size(),
            nlink: md.nlink(),
            ino: md.ino(),
            rdev: md.rdev(),
            mtime: (md.mtime(), md.mtime_nsec()),
            ctime: (md.ctime(), md.ctime_nsec()),
            content: (read && ft.is_file())
                .then(|| fs::read(p).unwrap().escape_ascii().to_string()),
            link: ft.is_symlink().then(|| fs::read_link(p).unwrap()),
            xattrs,
        }
    }
}

fn walk_snapshot(p: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, Meta>) {
    let m = Meta::of(p, true);
    let is_dir = m.mode & 0o170000 == 0o040000;
    out.insert(rel.to_path_buf(), m);
    if is_dir {
        let names = list_names(p);
        out.insert(
            rel.join("<entries>"),
            Meta {
                content: Some(names.join(&b'/').escape_ascii().to_string()),
                ..Meta::default()
            },
        );
        for n in names {
            let n = std::ffi::OsStr::from_bytes(&n);
            walk_snapshot(&p.join(n), &rel.join(n), out);
        }
    }
}

fn diff_snapshots(
    before: &BTreeMap<PathBuf, Meta>,
    after: &BTreeMap<PathBuf, Meta>,
) -> Vec<String> {
    let mut d = Vec::new();
    for (k, v) in before {
        match after.get(k) {
            None => d.push(format!("{} disappeared", k.display())),
            Some(a) if a != v => d.push(format!(
                "{} changed:\n      before {v:?}\n      after  {a:?}",
                k.display()
            )),
            _ => {}
        }
    }
    for k in after.keys() {
        if !before.contains_key(k) {
            d.push(format!("{} appeared", k.display()));
        }
    }
    d
}

/// Generator names that exist in `/`, `/tmp` or the sandbox's parent (should be none).
fn strays(sandbox_parent: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for dir in [Path::new("/"), Path::new("/tmp"), sandbox_parent] {
        for n in STRAY_NAMES {
            let p = dir.join(n);
            if fs::symlink_metadata(&p).is_ok() {
                v.push(p);
            }
        }
    }
    v.sort();
    v.dedup();
    v
}

// ---------------------------------------------------------------------------------------------
// The generator.

struct Gen<'a> {
    rng: Rng,
    /// The sandbox's absolute path without the leading `/` (e.g. `tmp/hostileXYZ`), for
    /// names that reach the sentinel tree through the `abs -> /` link.
    sandbox_rel: &'a str,
}

impl Gen<'_> {
    fn component(&mut self) -> Vec<u8> {
        let r = self.rng.below(100);
        match r {
            0..=34 => self
                .rng
                .pick(&["hx1", "hx2", "nx1", "nx2", "hx3"])
                .as_bytes()
                .to_vec(),
            35..=54 => self.rng.pick(NAMES).as_bytes().to_vec(),
            55..=69 => b"..".to_vec(),
            70..=74 => b".".to_vec(),
            75..=79 => self.rng.pick(HOST_NAMES).as_bytes().to_vec(),
            80..=86 => format!("{}/outside", self.sandbox_rel).into_bytes(),
            87..=91 => {
                format!(".wh.{}", self.rng.pick(&["hx1", "hx2", "out", "abs", "up"])).into_bytes()
            }
            92..=95 => vec![b'x'; 1 + self.rng.below(120) as usize],
            // Not UTF-8, with a newline.
            _ => vec![b'a' + self.rng.below(26) as u8, 0xff, b'\n'],
        }
    }

    fn path(&mut self) -> Vec<u8> {
        let prefix = *self
            .rng
            .pick(&["", "", "", "", "/", "./", "../", "../../", "//", "/../"]);
        let n = 1 + self.rng.below(4) as usize;
        let mut s = prefix.as_bytes().to_vec();
        for i in 0..n {
            if i > 0 {
                s.extend_from_slice(if self.rng.chance(5) { b"//" } else { b"/" });
            }
            s.extend(self.component());
        }
        if self.rng.chance(5) {
            s.push(b'/');
        }
        s
    }

    fn link_target(&mut self) -> Vec<u8> {
        let abs_out = format!("/{}/outside", self.sandbox_rel);
        let fixed = [
            "/",
            "..",
            "../..",
            "../outside",
            "../outside/hx1",
            "/outside",
            "/proc/self/root",
            "/proc/self/cwd",
            "/proc/self/fd/3",
            abs_out.as_str(),
            "loop1",
            "hx1/../../outside",
            "hx1",
            "hx3",
            "",
            ".",
            "self/self/..",
            "/etc/passwd",
        ];
        if self.rng.chance(50) {
            self.rng.pick(&fixed).as_bytes().to_vec()
        } else {
            self.path()
        }
    }

    fn carrier(&mut self, s: &[u8]) -> Carrier {
        let r = self.rng.below(100);
        if r < 15 {
            Carrier::Pax
        } else if r < 27 || (s.len() > 100 && ustar_split(s).is_none()) {
            if r < 27 || self.rng.chance(50) {
                Carrier::GnuLong
            } else {
                Carrier::Pax
            }
        } else {
            Carrier::Header
        }
    }

    fn num_small(&mut self) -> Num {
        match self.rng.below(12) {
            0 => Num::Pax("4294967295".into()),
            1 => Num::Pax("-1".into()),
            2 => Num::Pax("99999999999".into()),
            3 => Num::Plain(-2), // base-256 negative
            4 => Num::Plain(0o7777777),
            5 => Num::Plain(65534),
            6 | 7 => Num::Plain(1000 + self.rng.below(3) as i64),
            _ => Num::Plain(0),
        }
    }

    fn mtime(&mut self) -> Num {
        match self.rng.below(10) {
            0 => Num::Plain(0),
            1 => Num::Pax("-5.5".into()),
            2 => Num::Pax("1.123456789123".into()),
            3 => Num::Pax("99999999999999999".into()),
            4 => Num::Plain(-1),
            5 => Num::Plain(1 << 40),
            _ => Num::Plain(1_600_000_000 + self.rng.below(1000) as i64),
        }
    }

    fn mode(&mut self, typeflag: u8) -> u64 {
        match self.rng.below(10) {
            0 => 0,
            1 => 0o7777,
            2 => 0o4755,
            3 => self.rng.below(0o10000),
            4 => 0o7777777,
            _ => {
                if typeflag == b'5' {
                    0o755
                } else {
                    0o644
                }
            }
        }
    }

    fn xattrs(&mut self) -> Vec<(String, Vec<u8>)> {
        let mut v = Vec::new();
        for _ in 0..self.rng.below(3) {
            let (k, val): (&str, Vec<u8>) = match self.rng.below(50) {
                0..=11 => ("user.a", b"1".to_vec()),
                12..=21 => ("user.big", self.rng.bytes(300)),
                22..=29 => ("trusted.overlay.opaque", b"y".to_vec()),
                30..=37 => ("trusted.x", b"t".to_vec()),
                38..=47 => ("security.test", b"s".to_vec()),
                // Both fail with EINVAL and end the layer.
                48 => ("user.", b"empty name".to_vec()),
                _ => (
                    "system.posix_acl_access",
                    b"\x02\x00\x00\x00garbage".to_vec(),
                ),
            };
            v.push((format!("SCHILY.xattr.{k}"), val));
        }
        v
    }

    fn device(&mut self) -> (Num, Num) {
        // Only device numbers that are harmless even if opened: null, zero, and absent ones.
        match self.rng.below(8) {
            0 => (Num::Plain(1), Num::Plain(3)),
            1 => (Num::Plain(1), Num::Plain(5)),
            2 => (Num::Plain(4095), Num::Plain(0xfffff)),
            3 => (Num::Plain(1 << 33), Num::Plain(1)), // out of range: invalid archive
            4 => (Num::Plain(-3), Num::Plain(0)),      // negative: invalid archive
            5 => (Num::Plain(0xfffff000), Num::Plain(0xffffff00)),
            _ => (Num::Plain(0), Num::Plain(0)),
        }
    }

    /// One random entry of a random type.
    fn entry(&mut self) -> Entry {
        let typeflag = match self.rng.below(100) {
            0..=14 => b'5',
            15..=34 => b'0',
            35..=54 => b'2',
            55..=64 => b'1',
            65..=68 => b'3',
            69..=70 => b'4',
            71..=73 => b'6',
            74..=75 => b'g',
            76 => *self.rng.pick(&[b'7', b'Z', b'V', b'D', 0]),
            77..=88 => b'w', // whiteout, below
            89..=94 => b'5',
            _ => b'0',
        };
        let mut name = self.path();
        let mut typeflag = typeflag;
        if typeflag == b'w' {
            typeflag = b'0';
            let (dir, _) = name.rsplit_once_slash();
            let wh = if self.rng.chance(30) {
                ".wh..wh..opq".to_string()
            } else {
                format!(
                    ".wh.{}",
                    self.rng.pick(&[
                        "hx1", "hx2", "hx3", "nx1", "nx2", "out", "abs", "up", "loop1", ".wh.hx1",
                        "hx1", "hx2", "nx1", "nx2", "hx1", "hx2", "nx1", "nx2", "", ".", "..",
                    ])
                )
            };
            name = [dir, wh.as_bytes()].concat();
        }
        self.make(typeflag, name)
    }

    fn make(&mut self, typeflag: u8, name: Vec<u8>) -> Entry {
        let mut e = Entry::new(typeflag, &name);
        e.name_via = self.carrier(&name);
        e.mode = self.mode(typeflag);
        e.uid = self.num_small();
        e.gid = self.num_small();
        e.mtime = self.mtime();
        if self.rng.chance(25) {
            e.pax.extend(self.xattrs());
        }
        match typeflag {
            b'0' | b'7' | 0 => {
                let n = *self.rng.pick(&[0usize, 1, 100, 511, 512, 513, 3000]);
                e.data = self.rng.bytes(n);
            }
            b'1' if self.rng.chance(80) => {
                // Mostly names of files that exist, some through links out of the root.
                e.linkname = self
                    .rng
                    .pick(&[
                        "hx3",
                        "/hx3",
                        "../hx3",
                        "hx1/hx2",
                        "dirlink/hx2",
                        "flink",
                        "hx2/hx3",
                        "self/hx3",
                        "up/hx3",
                        "out/hx1",
                        "absout/hx1",
                        "rel/hx1",
                        "chain1/hx1",
                        "abs/etc/passwd",
                        "fout",
                        "fabs",
                    ])
                    .as_bytes()
                    .to_vec();
                e.link_via = self.carrier(&e.linkname.clone());
            }
            b'1' | b'2' => {
                e.linkname = self.link_target();
                e.link_via = self.carrier(&e.linkname.clone());
            }
            b'3' | b'4' => (e.devmajor, e.devminor) = self.device(),
            b'g' => {
                e.pax.push(("path".into(), self.path()));
                e.name_via = Carrier::Header;
            }
            _ => {}
        }
        e
    }

    /// A layer: random entries mixed with scenarios known to be dangerous.
    fn layer(&mut self) -> Vec<Entry> {
        let mut v = Vec::new();
        // Short layers often apply cleanly (later layers then meet their work); long ones dig deeper.
        let max = *self.rng.pick(&[6, 25]);
        let n = 1 + self.rng.below(max);
        while (v.len() as u64) < n {
            if self.rng.chance(25) {
                v.extend(self.scenario());
            } else {
                v.push(self.entry());
            }
        }
        v
    }

    fn scenario(&mut self) -> Vec<Entry> {
        let x = self.rng.pick(&["hx1", "hx2", "hx3", "nd"]).to_string();
        let t = self.link_target();
        let j = |a: &str, b: &str| format!("{a}/{b}").into_bytes();
        let file = |g: &mut Self, n: Vec<u8>| g.make(b'0', n);
        let sym = |g: &mut Self, n: Vec<u8>, to: &[u8]| {
            let mut e = g.make(b'2', n);
            e.linkname = to.to_vec();
            e
        };
        let hard = |g: &mut Self, n: Vec<u8>, to: Vec<u8>| {
            let mut e = g.make(b'1', n);
            e.linkname = to;
            e
        };
        match self.rng.below(8) {
            // A directory replaced by a symlink mid-layer, then written through.
            0 => vec![
                self.make(b'5', x.clone().into_bytes()),
                file(self, j(&x, "f")),
                sym(self, x.clone().into_bytes(), &t),
                file(self, j(&x, "hx1")),
                self.make(b'5', j(&x, "hx2")),
            ],
            // A hardlink through a symlink.
            1 => vec![
                sym(self, x.clone().into_bytes(), &t),
                hard(self, b"hl".to_vec(), j(&x, "hx1")),
                file(self, b"hl".to_vec()),
            ],
            // Whiteouts through a symlinked directory.
            2 => vec![
                sym(self, x.clone().into_bytes(), &t),
                file(self, j(&x, ".wh.hx1")),
                file(self, j(&x, ".wh.hx2")),
                file(self, j(&x, ".wh..wh..opq")),
            ],
            // A chain ending outside.
            3 => vec![
                sym(self, b"c1".to_vec(), b"c2"),
                sym(self, b"c2".to_vec(), b"c3/../c4"),
                sym(self, b"c4".to_vec(), &t),
                file(self, b"c1/hx1".to_vec()),
                hard(self, b"c1/hx2".to_vec(), b"c1/hx3".to_vec()),
            ],
            // A loop (rarer: it always ends the layer).
            4 if self.rng.chance(30) => vec![
                sym(self, b"la".to_vec(), b"lb/x"),
                sym(self, b"lb".to_vec(), b"la/x"),
                file(self, b"la/f".to_vec()),
                file(self, b"la/.wh.f".to_vec()),
            ],
            // Replace a hardlinked file, then white out the link.
            5 => vec![
                file(self, x.clone().into_bytes()),
                hard(self, b"hl2".to_vec(), x.clone().into_bytes()),
                file(self, x.clone().into_bytes()),
                file(self, b".wh.hl2".to_vec()),
            ],
            // Opaque directory after writes.
            6 => vec![
                self.make(b'5', x.clone().into_bytes()),
                file(self, j(&x, "a")),
                file(self, j(&x, ".wh..wh..opq")),
                file(self, j(&x, "b")),
                sym(self, j(&x, "a"), &t),
            ],
            // A symlinked parent swapped between entries of the same directory.
            _ => vec![
                self.make(b'5', b"sw".to_vec()),
                file(self, b"sw/hx1".to_vec()),
                sym(self, b"sw".to_vec(), &t),
                file(self, b"sw/hx1".to_vec()),
                self.make(b'5', b"sw".to_vec()),
                file(self, b"sw/hx1".to_vec()),
            ],
        }
    }
}

trait SplitSlash {
    fn rsplit_once_slash(&self) -> (&[u8], &[u8]);
}
impl SplitSlash for Vec<u8> {
    /// (`dir/` including the slash, last part).
    fn rsplit_once_slash(&self) -> (&[u8], &[u8]) {
        match self.iter().rposition(|&b| b == b'/') {
            Some(i) => (&self[..i + 1], &self[i + 1..]),
            None => (&self[..0], &self[..]),
        }
    }
}

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

#[test]
fn hostile_layers_stay_inside_the_root() {
    require_root();
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
            let mut g = Gen {
                rng: Rng::new(seed),
                sandbox_rel: &sandbox_rel,
            };
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
        failures
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Both outcomes must be common, or the generator has degenerated.
    let total: usize = stats.values().sum();
    let ok = stats.get("ok").copied().unwrap_or(0);
    assert!(ok > total / 8, "too few layers applied: {stats:?}");
    assert!(ok < total * 4 / 5, "too few layers rejected: {stats:?}");
}

// ---------------------------------------------------------------------------------------------
// Corrupted streams.

/// A well-formed layer of ordinary entries (so any failure is the corruption's doing).
fn benign_layer(rng: &mut Rng) -> Vec<u8> {
    let mut entries = vec![Entry::new(b'5', b"d")];
    for i in 0..(2 + rng.below(12)) {
        let mut e = match rng.below(5) {
            0 => Entry::new(b'5', format!("d/sub{i}").as_bytes()),
            1 => {
                let mut e = Entry::new(b'2', format!("d/l{i}").as_bytes());
                e.linkname = b"../d".to_vec();
                e
            }
            2 => {
                let mut e = Entry::new(b'0', format!("d/{}{i}", "long".repeat(40)).as_bytes());
                e.name_via = Carrier::Pax;
                e.data = rng.bytes(700);
                e
            }
            _ => {
                let mut e = Entry::new(b'0', format!("d/f{i}").as_bytes());
                let n = *rng.pick(&[0usize, 10, 512, 5000, 70_000]);
                e.data = rng.bytes(n);
                e
            }
        };
        if rng.chance(20) {
            e.pax.push(("SCHILY.xattr.user.k".into(), b"v".to_vec()));
        }
        entries.push(e);
    }
    encode(&entries)
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(b).unwrap();
    gz.finish().unwrap()
}

fn zstd(b: &[u8]) -> Vec<u8> {
    zstd::encode_all(b, 1).unwrap()
}

#[test]
fn corrupted_streams_fail_cleanly() {
    require_root();
    let mut failures = Vec::new();
    let mut stats: BTreeMap<String, usize> = BTreeMap::new();
    for seed in 0..MUTATIONS {
        let mut rng = Rng::new(seed ^ 0xc0ffee);
        let tar = benign_layer(&mut rng);
        let (codec, mut bytes) = match seed % 3 {
            0 => ("tar", tar),
            1 => ("gzip", gzip(&tar)),
            _ => ("zstd", zstd(&tar)),
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
                    "gzip" => gzip(&tar),
                    "zstd" => zstd(&tar),
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
        failures
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Junk that is not a layer at all: every one a clear error or (empty input) an empty layer.
#[test]
fn random_junk_fails_cleanly() {
    require_root();
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
    require_root();
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
        for fallback in [false, true] {
            let resolver = if fallback {
                Resolver::Walk
            } else {
                Resolver::Auto
            };
            let sb = Sandbox::new();
            let (problems, _) = check_layer(layer.clone(), WhiteoutMode::Remove, resolver, &sb);
            for p in problems {
                failures.push(format!("{what} (fallback resolver: {fallback}): {p}"));
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
    require_root();
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
