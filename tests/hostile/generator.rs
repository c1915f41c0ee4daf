//! The generator of hostile layers: random entries (`..`, absolute names, names through the
//! sandbox's trap symlinks, whiteouts, devices, odd numbers, PAX and GNU long names) mixed
//! with scenarios known to be dangerous. Everything comes from one seeded [`Rng`], so a seed
//! gives the same layers every time.

use crate::common::rng::Rng;
use crate::common::tar::{encode, ustar_split, Carrier, Entry, Num};

use super::sandbox::{HOST_NAMES, NAMES};

/// Layers for one seed and one sandbox.
pub struct Gen<'a> {
    rng: Rng,
    /// The sandbox's absolute path without the leading `/` (e.g. `tmp/hostileXYZ`), for
    /// names that reach the sentinel tree through the `abs -> /` link.
    sandbox_rel: &'a str,
}

impl<'a> Gen<'a> {
    /// `sandbox_rel`: the sandbox's absolute path without the leading `/`.
    pub fn new(seed: u64, sandbox_rel: &'a str) -> Gen<'a> {
        Gen {
            rng: Rng::new(seed),
            sandbox_rel,
        }
    }

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
            let dir = dir_part(&name);
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
    pub fn layer(&mut self) -> Vec<Entry> {
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

/// `dir/` of `dir/name`, including the slash (empty for a bare name).
fn dir_part(name: &[u8]) -> &[u8] {
    match name.iter().rposition(|&b| b == b'/') {
        Some(i) => &name[..i + 1],
        None => &name[..0],
    }
}

/// A well-formed layer of ordinary entries (so any failure is the corruption's doing).
pub fn benign_layer(rng: &mut Rng) -> Vec<u8> {
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
