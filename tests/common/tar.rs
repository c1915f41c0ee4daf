//! The one tar writer of the tests. Hand-written rather than the `tar` crate's builder, so a
//! test controls every header byte, including the invalid and hostile ones a library refuses
//! to write.
//!
//! Two levels: [`Header`] and [`Tar`] write blocks exactly as given; [`Entry`] is one member
//! as the reader should see it, with its names carried in the header, a PAX record or a GNU
//! long-name entry, and numbers that need PAX put there ([`encode`]).

use std::fmt::Write as _;

pub const BLOCK: usize = 512;

/// The name field's size; longer names need the prefix, PAX or a GNU long name.
const NAME_LEN: usize = 100;
/// The USTAR prefix field's size.
const PREFIX_LEN: usize = 155;
/// What a member's header holds when PAX carries the real name or link name: something a
/// reader that ignored PAX would get wrong, so that using it shows.
const DECOY_NAME: &[u8] = b"decoy/../../decoy";
const DECOY_LINK: &[u8] = b"/decoy/link";

/// One header block's fields, written as given (no splitting, no PAX). Numbers are octal
/// when they fit, else base-256 (negative ones too), as GNU tar writes them.
#[derive(Clone, Debug)]
pub struct Header {
    pub typeflag: u8,
    /// Truncated to 100 bytes.
    pub name: Vec<u8>,
    /// The USTAR prefix field; written with POSIX magic only.
    pub prefix: Vec<u8>,
    /// Truncated to 100 bytes.
    pub linkname: Vec<u8>,
    /// Only the low 21 bits fit the field (seven octal digits).
    pub mode: u64,
    pub uid: i64,
    pub gid: i64,
    pub mtime: i64,
    pub devmajor: i64,
    pub devminor: i64,
    /// The size field; `None`: the length of the data written after the header (0 for
    /// [`Header::block`]).
    pub size: Option<i64>,
    /// GNU magic (`ustar  \0`) instead of POSIX (`ustar\0` `00`).
    pub gnu: bool,
}

impl Header {
    /// A member of type `typeflag`: mode 0755 for a directory, else 0644; owned by root;
    /// modified at 1600000000.
    pub fn new(typeflag: u8, name: impl AsRef<[u8]>) -> Header {
        Header {
            typeflag,
            name: name.as_ref().to_vec(),
            prefix: Vec::new(),
            linkname: Vec::new(),
            mode: default_mode(typeflag),
            uid: 0,
            gid: 0,
            mtime: 1_600_000_000,
            devmajor: 0,
            devminor: 0,
            size: None,
            gnu: false,
        }
    }

    /// A header that only carries data for the next member (PAX `x` and `g`, GNU `L` and
    /// `K`): mode 0644, owner and time zero.
    fn meta(typeflag: u8, name: &[u8]) -> Header {
        Header {
            mode: 0o644,
            mtime: 0,
            ..Header::new(typeflag, name)
        }
    }

    /// The header block, checksummed.
    pub fn block(&self) -> [u8; BLOCK] {
        let mut b = [0u8; BLOCK];
        let n = self.name.len().min(NAME_LEN);
        b[..n].copy_from_slice(&self.name[..n]);
        put_num(&mut b[100..108], (self.mode & 0o7777777) as i64);
        put_num(&mut b[108..116], self.uid);
        put_num(&mut b[116..124], self.gid);
        put_num(&mut b[124..136], self.size.unwrap_or(0));
        put_num(&mut b[136..148], self.mtime);
        b[156] = self.typeflag;
        let l = self.linkname.len().min(NAME_LEN);
        b[157..157 + l].copy_from_slice(&self.linkname[..l]);
        if self.gnu {
            b[257..263].copy_from_slice(b"ustar ");
            b[263..265].copy_from_slice(b" \0");
        } else {
            b[257..263].copy_from_slice(b"ustar\0");
            b[263..265].copy_from_slice(b"00");
            let p = self.prefix.len().min(PREFIX_LEN);
            b[345..345 + p].copy_from_slice(&self.prefix[..p]);
        }
        put_num(&mut b[329..337], self.devmajor);
        put_num(&mut b[337..345], self.devminor);
        fix_checksum(&mut b);
        b
    }
}

fn default_mode(typeflag: u8) -> u64 {
    if typeflag == b'5' {
        0o755
    } else {
        0o644
    }
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
    field.fill(if v < 0 { 0xff } else { 0 });
    let k = n.min(8);
    field[n - k..].copy_from_slice(&bytes[8 - k..]);
    field[0] |= 0x80;
}

/// Recompute the checksum of a header block (after a test changed its bytes).
pub fn fix_checksum(blk: &mut [u8]) {
    blk[148..156].copy_from_slice(b"        ");
    let sum: u64 = blk.iter().map(|&b| b as u64).sum();
    let s = format!("{sum:06o}\0 ");
    blk[148..156].copy_from_slice(s.as_bytes());
}

/// PAX records, each `<length> <key>=<value>\n` where the length counts itself.
pub fn pax_records(records: &[(&str, &[u8])]) -> Vec<u8> {
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

/// A tar stream under construction.
#[derive(Default)]
pub struct Tar {
    buf: Vec<u8>,
}

impl Tar {
    pub fn new() -> Self {
        Tar::default()
    }

    /// Bytes as they are, unpadded.
    pub fn raw(mut self, bytes: &[u8]) -> Self {
        self.buf.extend_from_slice(bytes);
        self
    }

    /// A header and its data, padded to a block.
    pub fn entry(mut self, hd: Header, data: &[u8]) -> Self {
        let hd = Header {
            size: Some(hd.size.unwrap_or(data.len() as i64)),
            ..hd
        };
        self.buf.extend_from_slice(&hd.block());
        self.buf.extend_from_slice(data);
        let rem = self.buf.len() % BLOCK;
        if rem != 0 {
            self.buf.resize(self.buf.len() + BLOCK - rem, 0);
        }
        self
    }

    /// A PAX extended header with the given records, applying to the next member.
    pub fn pax(self, records: &[(&str, &[u8])]) -> Self {
        self.entry(Header::meta(b'x', b"PaxHeaders.0/x"), &pax_records(records))
    }

    /// A GNU long name (`L`) or long link name (`K`) for the next member.
    pub fn gnu_long(self, typeflag: u8, name: &[u8]) -> Self {
        let hd = Header {
            gnu: true,
            ..Header::meta(typeflag, b"././@LongLink")
        };
        self.entry(hd, &[name, b"\0"].concat())
    }

    pub fn dir(self, name: &str) -> Self {
        self.entry(Header::new(b'5', name), b"")
    }

    pub fn file(self, name: &str, data: &[u8]) -> Self {
        self.entry(Header::new(b'0', name), data)
    }

    pub fn file_mode(self, name: &str, data: &[u8], mode: u64) -> Self {
        let hd = Header {
            mode,
            ..Header::new(b'0', name)
        };
        self.entry(hd, data)
    }

    pub fn symlink(self, target: &str, name: &str) -> Self {
        let hd = Header {
            linkname: target.as_bytes().to_vec(),
            mode: 0o777,
            ..Header::new(b'2', name)
        };
        self.entry(hd, b"")
    }

    pub fn link(self, target: &str, name: &str) -> Self {
        let hd = Header {
            linkname: target.as_bytes().to_vec(),
            ..Header::new(b'1', name)
        };
        self.entry(hd, b"")
    }

    /// One member described by an [`Entry`], with the PAX and GNU headers it needs first.
    pub fn member(mut self, e: &Entry) -> Self {
        let mut pax = e.pax.clone();
        let uid = e.uid.in_header(&mut pax, "uid");
        let gid = e.gid.in_header(&mut pax, "gid");
        let mtime = e.mtime.in_header(&mut pax, "mtime");
        let devmajor = e.devmajor.in_header(&mut pax, "devmajor");
        let devminor = e.devminor.in_header(&mut pax, "devminor");

        let mut gnu = false;
        let (mut name, mut prefix) = (e.name.clone(), Vec::new());
        match e.name_via {
            Carrier::Header => {
                if let Some((p, n)) = ustar_split(&e.name) {
                    (prefix, name) = (p.to_vec(), n.to_vec());
                }
            }
            Carrier::Pax => {
                pax.push(("path".into(), e.name.clone()));
                name = DECOY_NAME.to_vec();
            }
            Carrier::GnuLong => {
                gnu = true;
                self = self.gnu_long(b'L', &e.name);
            }
        }
        let mut linkname = e.linkname.clone();
        match e.link_via {
            Carrier::Header => {}
            Carrier::Pax => {
                pax.push(("linkpath".into(), e.linkname.clone()));
                linkname = DECOY_LINK.to_vec();
            }
            Carrier::GnuLong => {
                gnu = true;
                self = self.gnu_long(b'K', &e.linkname);
            }
        }
        let records: Vec<(&str, &[u8])> = pax
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        if e.typeflag == b'g' {
            // A global header: its records are its data.
            let hd = Header {
                prefix,
                ..Header::meta(b'g', &name)
            };
            return self.entry(hd, &pax_records(&records));
        }
        if !records.is_empty() {
            self = self.pax(&records);
        }
        let hd = Header {
            typeflag: e.typeflag,
            name,
            prefix,
            linkname,
            mode: e.mode,
            uid,
            gid,
            mtime,
            devmajor,
            devminor,
            size: None,
            gnu,
        };
        self.entry(hd, &e.data)
    }

    /// The stream with its end-of-archive marker (two zero blocks).
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&[0u8; 2 * BLOCK]);
        self.buf
    }
}

/// A whole layer of [`Entry`]s.
pub fn encode(entries: &[Entry]) -> Vec<u8> {
    entries
        .iter()
        .fold(Tar::new(), |tar, e| tar.member(e))
        .finish()
}

/// How a member's name (or link name) reaches the reader.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Carrier {
    /// In the USTAR header (split into prefix/name when longer than 100 bytes).
    Header,
    /// A PAX `path`/`linkpath` record; the header holds a decoy.
    Pax,
    /// A GNU `L`/`K` long-name entry; the header holds the truncated name.
    GnuLong,
}

/// A numeric header field: octal when it fits, else base-256, or a PAX record.
#[derive(Debug, Clone, PartialEq)]
pub enum Num {
    Plain(i64),
    Pax(String),
}

impl Num {
    /// The header field's value; a PAX number goes to `pax` as `key` and the field holds 0.
    fn in_header(&self, pax: &mut Vec<(String, Vec<u8>)>, key: &str) -> i64 {
        match self {
            Num::Plain(v) => *v,
            Num::Pax(s) => {
                pax.push((key.to_string(), s.as_bytes().to_vec()));
                0
            }
        }
    }
}

/// One member as the reader should see it ([`Tar::member`] writes it).
#[derive(Clone)]
pub struct Entry {
    pub typeflag: u8,
    pub name: Vec<u8>,
    pub name_via: Carrier,
    pub linkname: Vec<u8>,
    pub link_via: Carrier,
    pub mode: u64,
    pub uid: Num,
    pub gid: Num,
    pub mtime: Num,
    pub devmajor: Num,
    pub devminor: Num,
    pub data: Vec<u8>,
    /// Extra PAX records (xattrs, fractional times, ...).
    pub pax: Vec<(String, Vec<u8>)>,
}

impl Entry {
    /// With the defaults of [`Header::new`], every name in the header.
    pub fn new(typeflag: u8, name: &[u8]) -> Entry {
        Entry {
            typeflag,
            name: name.to_vec(),
            name_via: Carrier::Header,
            linkname: Vec::new(),
            link_via: Carrier::Header,
            mode: default_mode(typeflag),
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

/// The entries one per line, numbered, for a failure message.
pub fn describe(entries: &[Entry]) -> String {
    let mut out = String::new();
    for (i, e) in entries.iter().enumerate() {
        let _ = writeln!(out, "    {i:2}: {e:?}");
    }
    out
}

/// USTAR split of a long name at a `/` (prefix ≤ 155, name ≤ 100), if there is one.
pub fn ustar_split(name: &[u8]) -> Option<(&[u8], &[u8])> {
    if name.len() <= NAME_LEN {
        return Some((&[], name));
    }
    (1..name.len().min(PREFIX_LEN + 1))
        .rev()
        .filter(|&i| name[i] == b'/')
        .map(|i| (&name[..i], &name[i + 1..]))
        .find(|(_, n)| !n.is_empty() && n.len() <= NAME_LEN)
}

/// The path of every entry of `layer`, read by the tar crate (an unreadable layer fails the
/// test rather than looking empty).
pub fn entry_names(layer: &[u8]) -> Vec<String> {
    tar::Archive::new(layer)
        .entries()
        .unwrap()
        .map(|e| String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned())
        .collect()
}
