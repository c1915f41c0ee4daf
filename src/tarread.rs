//! A tar reader that accepts and rejects exactly what Go's `archive/tar` reader does (the reader
//! containerd's `archive.Apply` uses): PAX records (path, linkpath, size, uid, gid, times with
//! fractions, `SCHILY.xattr.*`), GNU long names and links, the USTAR prefix, STAR and GNU
//! atimes, base-256 numbers, empty numeric fields as 0, signed or unsigned checksums,
//! header-only types that never have data, `TypeRegA` with a trailing `/` as a directory, and
//! Go's end-of-archive rules. The `tar` crate differs from Go in several of these, hence our own.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, BufRead};

use crate::error::{Error, Result};

// The typeflags both the reader and the writer know live with the writer's header encoding.
pub(crate) use crate::layer::{
    BLOCK_SIZE as BLOCK, TYPE_BLOCK, TYPE_CHAR, TYPE_DIR, TYPE_FIFO, TYPE_LINK, TYPE_REG,
    TYPE_SYMLINK, TYPE_XHEADER,
};
/// Go's `maxSpecialFileSize`: the largest PAX or GNU long-name payload accepted.
const MAX_SPECIAL_FILE_SIZE: i64 = 1 << 20;

pub(crate) const TYPE_REGA: u8 = 0;
pub(crate) const TYPE_XGLOBAL: u8 = b'g';
pub(crate) const TYPE_GNU_LONGNAME: u8 = b'L';
pub(crate) const TYPE_GNU_LONGLINK: u8 = b'K';
pub(crate) const TYPE_GNU_SPARSE: u8 = b'S';

/// Nanoseconds since the Unix epoch (wide enough for any `i64` seconds plus fraction).
pub type Nanos = i128;

/// One entry as Go's `tar.Reader.Next` returns it (only the fields apply uses).
#[derive(Debug, Clone, Default)]
pub struct Header {
    pub typeflag: u8,
    pub name: Vec<u8>,
    pub linkname: Vec<u8>,
    pub size: i64,
    pub mode: i64,
    pub uid: i64,
    pub gid: i64,
    pub mtime: Nanos,
    /// `None` when the archive carries no access time (Go's zero `time.Time`).
    pub atime: Option<Nanos>,
    pub devmajor: i64,
    pub devminor: i64,
    /// Every PAX record of the entry, `SCHILY.xattr.*` included (later duplicates win).
    pub pax: BTreeMap<Vec<u8>, Vec<u8>>,
}

fn bad(msg: impl Into<String>) -> Error {
    Error::InvalidArchive(msg.into())
}

fn read_err(e: io::Error) -> Error {
    if crate::error::is_canceled(&e) {
        Error::Canceled
    } else if e.kind() == io::ErrorKind::UnexpectedEof {
        bad("unexpected end of layer stream")
    } else {
        Error::io("read layer", e)
    }
}

/// Sequential reader over a buffered byte stream.
pub struct TarReader<R> {
    r: R,
    /// Data bytes of the current entry not yet read.
    remaining: u64,
    /// Padding after the current entry's data.
    pad: u64,
    done: bool,
    /// The holes of the current entry when it is sparse (Go's `sparseFileReader`).
    sparse: Option<SparseState>,
    /// The last header block read, and whether it was GNU format (for old GNU sparse maps).
    raw: [u8; BLOCK],
    raw_gnu: bool,
}

/// Logical reading state of a sparse entry: holes (offset, length) in order, the last one
/// always kept (possibly empty), and the logical position.
struct SparseState {
    holes: VecDeque<(i64, i64)>,
    pos: i64,
}

impl SparseState {
    fn logical_remaining(&self) -> i64 {
        let (o, l) = *self.holes.back().expect("at least one hole");
        o + l - self.pos
    }
}

static ZEROS: [u8; 64 * 1024] = [0u8; 64 * 1024];

/// How a read of exactly `n` bytes ended.
enum Fill {
    Full,
    /// EOF before the first byte.
    Empty,
    /// EOF after some bytes.
    Partial,
}

impl<R: BufRead> TarReader<R> {
    pub fn new(r: R) -> Self {
        TarReader {
            r,
            remaining: 0,
            pad: 0,
            done: false,
            sparse: None,
            raw: [0u8; BLOCK],
            raw_gnu: false,
        }
    }

    /// The underlying stream (positioned after the archive once `next` returned `None`).
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.r
    }

    fn fill(&mut self, buf: &mut [u8]) -> Result<Fill> {
        let mut n = 0;
        while n < buf.len() {
            let avail = self.r.fill_buf().map_err(read_err)?;
            if avail.is_empty() {
                return Ok(if n == 0 { Fill::Empty } else { Fill::Partial });
            }
            let k = avail.len().min(buf.len() - n);
            buf[n..n + k].copy_from_slice(&avail[..k]);
            self.r.consume(k);
            n += k;
        }
        Ok(Fill::Full)
    }

    /// Skip `n` bytes; `Ok(false)` if the stream ended first.
    fn skip(&mut self, mut n: u64) -> Result<bool> {
        while n > 0 {
            let avail = self.r.fill_buf().map_err(read_err)?;
            if avail.is_empty() {
                return Ok(false);
            }
            let k = (avail.len() as u64).min(n) as usize;
            self.r.consume(k);
            n -= k as u64;
        }
        Ok(true)
    }

    /// Bytes of the current entry's data not yet read.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Hand the next chunk of the current entry's data to `f` (at most what `fill_buf`
    /// offers, no copy); returns how many bytes were passed, 0 at the end of the data.
    pub fn read_chunk(&mut self, f: impl FnOnce(&[u8]) -> Result<()>) -> Result<usize> {
        if self.sparse.is_some() {
            return self.read_sparse_chunk(f);
        }
        if self.remaining == 0 {
            return Ok(0);
        }
        let avail = self.r.fill_buf().map_err(read_err)?;
        if avail.is_empty() {
            return Err(bad("unexpected end of layer stream inside file data"));
        }
        let k = (avail.len() as u64).min(self.remaining) as usize;
        f(&avail[..k])?;
        self.r.consume(k);
        self.remaining -= k as u64;
        Ok(k)
    }

    /// A chunk of a sparse entry: file data from the archive, or zeros for a hole.
    fn read_sparse_chunk(&mut self, f: impl FnOnce(&[u8]) -> Result<()>) -> Result<usize> {
        let sp = self.sparse.as_mut().expect("sparse entry");
        if sp.logical_remaining() <= 0 {
            if self.remaining > 0 {
                return Err(bad("sparse file has more data than its map references"));
            }
            return Ok(0);
        }
        let (hole_start, hole_len) = sp.holes[0];
        let hole_end = hole_start + hole_len;
        let n = if sp.pos < hole_start {
            // A data fragment, read from the archive.
            if self.remaining == 0 {
                return Err(bad("sparse file has less data than its map references"));
            }
            let avail = self.r.fill_buf().map_err(read_err)?;
            if avail.is_empty() {
                return Err(bad("unexpected end of layer stream inside file data"));
            }
            let k = (avail.len() as u64)
                .min(self.remaining)
                .min((hole_start - sp.pos) as u64) as usize;
            f(&avail[..k])?;
            self.r.consume(k);
            self.remaining -= k as u64;
            k
        } else {
            let k = ((hole_end - sp.pos) as u64).min(ZEROS.len() as u64) as usize;
            f(&ZEROS[..k])?;
            k
        };
        let sp = self.sparse.as_mut().expect("sparse entry");
        sp.pos += n as i64;
        if sp.pos >= hole_end && sp.holes.len() > 1 {
            sp.holes.pop_front();
        }
        Ok(n)
    }

    /// Go's `readGNUSparseMap1x0`: the map at the start of the data, in whole blocks of
    /// newline-terminated decimal numbers.
    fn read_sparse_map_1x0(&mut self) -> Result<Vec<(i64, i64)>> {
        let mut buf: Vec<u8> = Vec::new();
        let mut newlines: i64 = 0;
        let mut total = 0usize;
        let mut cursor = 0usize;
        let mut feed =
            |this: &mut Self, buf: &mut Vec<u8>, newlines: &mut i64, n: i64| -> Result<()> {
                while *newlines < n {
                    total += BLOCK;
                    if total > MAX_SPECIAL_FILE_SIZE as usize {
                        return Err(bad("sparse map too long"));
                    }
                    if this.remaining < BLOCK as u64 {
                        return Err(bad("unexpected end of sparse map"));
                    }
                    let mut blk = [0u8; BLOCK];
                    if !matches!(this.fill(&mut blk)?, Fill::Full) {
                        return Err(bad("unexpected end of layer stream inside a sparse map"));
                    }
                    this.remaining -= BLOCK as u64;
                    *newlines += blk.iter().filter(|&&c| c == b'\n').count() as i64;
                    buf.extend_from_slice(&blk);
                }
                Ok(())
            };
        let token = |buf: &Vec<u8>, cursor: &mut usize, newlines: &mut i64| -> Vec<u8> {
            *newlines -= 1;
            let rest = &buf[*cursor..];
            let end = rest
                .iter()
                .position(|&c| c == b'\n')
                .map_or(rest.len(), |i| i + 1);
            *cursor += end;
            let tok = &rest[..end];
            tok.strip_suffix(b"\n").unwrap_or(tok).to_vec()
        };
        feed(self, &mut buf, &mut newlines, 1)?;
        let count = parse_int(&token(&buf, &mut cursor, &mut newlines))
            .filter(|&n| n >= 0 && n.checked_mul(2).is_some())
            .ok_or_else(|| bad("invalid sparse map"))?;
        feed(self, &mut buf, &mut newlines, 2 * count)?;
        let mut out = Vec::new();
        for _ in 0..count {
            let off = parse_int(&token(&buf, &mut cursor, &mut newlines));
            let len = parse_int(&token(&buf, &mut cursor, &mut newlines));
            let (Some(off), Some(len)) = (off, len) else {
                return Err(bad("invalid sparse map"));
            };
            push_sparse(&mut out, off, len)?;
        }
        Ok(out)
    }

    /// Go's `readOldGNUSparseMap`: entries in the header and in extension blocks that
    /// follow it (not counted in the size).
    fn read_old_gnu_sparse_map(&mut self, hdr: &mut Header) -> Result<Vec<(i64, i64)>> {
        if !self.raw_gnu {
            return Err(bad("sparse entry (type S) in a non-GNU header"));
        }
        let mut p = Parser::default();
        hdr.size = p.numeric(&self.raw[483..495]);
        if p.err {
            return Err(bad("invalid sparse header"));
        }
        let mut blk = self.raw;
        // (offset of the entry area, entries, offset of the "extended" flag)
        let (mut area, mut entries, mut ext_at) = (386usize, 4usize, 482usize);
        let mut total = 96usize;
        let mut out = Vec::new();
        while total < MAX_SPECIAL_FILE_SIZE as usize {
            for i in 0..entries {
                let e = &blk[area + i * 24..area + i * 24 + 24];
                if e[0] == 0 {
                    break;
                }
                let off = p.numeric(&e[..12]);
                let len = p.numeric(&e[12..]);
                if p.err {
                    return Err(bad("invalid sparse header"));
                }
                push_sparse(&mut out, off, len)?;
            }
            if blk[ext_at] > 0 {
                if !matches!(self.fill(&mut blk)?, Fill::Full) {
                    return Err(bad("unexpected end of layer stream inside a sparse header"));
                }
                (area, entries, ext_at) = (0, 21, 504);
                total += 504;
                continue;
            }
            return Ok(out);
        }
        Err(bad("sparse map too long"))
    }

    /// Go's `handleSparseFile`.
    fn handle_sparse(&mut self, hdr: &mut Header) -> Result<()> {
        let map = if hdr.typeflag == TYPE_GNU_SPARSE {
            Some(self.read_old_gnu_sparse_map(hdr)?)
        } else {
            let get = |k: &str| hdr.pax.get(k.as_bytes()).cloned().unwrap_or_default();
            let (major, minor) = (get("GNU.sparse.major"), get("GNU.sparse.minor"));
            let is_1x0 = match (major.as_slice(), minor.as_slice()) {
                (b"0", b"0") | (b"0", b"1") => Some(false),
                (b"1", b"0") => Some(true),
                _ if !major.is_empty() || !minor.is_empty() => None,
                _ if !get("GNU.sparse.map").is_empty() => Some(false),
                _ => None,
            };
            match is_1x0 {
                None => None,
                Some(is_1x0) => {
                    let name = get("GNU.sparse.name");
                    if !name.is_empty() {
                        hdr.name = name;
                    }
                    let mut size = get("GNU.sparse.size");
                    if size.is_empty() {
                        size = get("GNU.sparse.realsize");
                    }
                    if !size.is_empty() {
                        hdr.size = parse_int(&size).ok_or_else(|| bad("invalid sparse size"))?;
                    }
                    Some(if is_1x0 {
                        self.read_sparse_map_1x0()?
                    } else {
                        sparse_map_0x1(&hdr.pax)?
                    })
                }
            }
        };
        if let Some(map) = map {
            if is_header_only(hdr.typeflag) || !valid_sparse(&map, hdr.size) {
                return Err(bad(format!(
                    "invalid sparse map for {:?}",
                    String::from_utf8_lossy(&hdr.name)
                )));
            }
            self.sparse = Some(SparseState {
                holes: invert_sparse(&map, hdr.size),
                pos: 0,
            });
        }
        Ok(())
    }

    fn read_special(&mut self, what: &str) -> Result<Vec<u8>> {
        if self.remaining > MAX_SPECIAL_FILE_SIZE as u64 {
            return Err(bad(format!(
                "{what} of {} bytes is too long (limit 1 MiB)",
                self.remaining
            )));
        }
        let mut buf = vec![0u8; self.remaining as usize];
        match self.fill(&mut buf)? {
            Fill::Full => {}
            _ if buf.is_empty() => {}
            _ => return Err(bad(format!("unexpected end of layer stream inside {what}"))),
        }
        self.remaining = 0;
        Ok(buf)
    }

    /// Set up data and padding for `hdr` (Go's `handleRegularFile`).
    fn set_data(&mut self, typeflag: u8, size: i64) -> Result<()> {
        let nb = if is_header_only(typeflag) { 0 } else { size };
        if nb < 0 {
            return Err(bad(format!("negative size {size} in tar header")));
        }
        self.remaining = nb as u64;
        self.pad = (BLOCK as u64 - nb as u64 % BLOCK as u64) % BLOCK as u64;
        Ok(())
    }

    /// The next entry, or `None` at the end of the archive.
    pub fn next_entry(&mut self) -> Result<Option<Header>> {
        if self.done {
            return Ok(None);
        }
        let res = self.next_inner();
        if !matches!(res, Ok(Some(_))) {
            self.done = true;
        }
        res
    }

    fn next_inner(&mut self) -> Result<Option<Header>> {
        let mut pax: Option<BTreeMap<Vec<u8>, Vec<u8>>> = None;
        let mut long_name: Vec<u8> = Vec::new();
        let mut long_link: Vec<u8> = Vec::new();
        loop {
            // Discard what is left of the previous entry; a short data section is an error,
            // but (as in Go) a stream that ends inside the padding is a clean end.
            self.sparse = None;
            if !self.skip(self.remaining)? {
                return Err(bad("unexpected end of layer stream inside file data"));
            }
            self.remaining = 0;
            if self.pad > 0 {
                let pad = self.pad;
                self.pad = 0;
                if !self.skip(pad)? {
                    return Ok(None);
                }
            }

            let Some(mut hdr) = self.read_header()? else {
                return Ok(None);
            };
            self.set_data(hdr.typeflag, hdr.size)?;

            match hdr.typeflag {
                TYPE_XHEADER | TYPE_XGLOBAL => {
                    let records = parse_pax(&self.read_special("PAX header")?)?;
                    if hdr.typeflag == TYPE_XGLOBAL {
                        // Go merges the records (ignoring errors) and returns only the name,
                        // type and records.
                        if let Some(p) = records.get(&b"path"[..]).filter(|v| !v.is_empty()) {
                            hdr.name = p.clone();
                        }
                        return Ok(Some(Header {
                            typeflag: TYPE_XGLOBAL,
                            name: hdr.name,
                            pax: records,
                            ..Header::default()
                        }));
                    }
                    pax = Some(records);
                }
                TYPE_GNU_LONGNAME | TYPE_GNU_LONGLINK => {
                    let data = self.read_special("GNU long name")?;
                    let s = cstr(&data).to_vec();
                    if hdr.typeflag == TYPE_GNU_LONGNAME {
                        long_name = s;
                    } else {
                        long_link = s;
                    }
                }
                _ => {
                    if let Some(records) = pax {
                        merge_pax(&mut hdr, records)?;
                    }
                    if !long_name.is_empty() {
                        hdr.name = long_name;
                    }
                    if !long_link.is_empty() {
                        hdr.linkname = long_link;
                    }
                    if hdr.typeflag == TYPE_REGA {
                        hdr.typeflag = if hdr.name.ends_with(b"/") {
                            TYPE_DIR
                        } else {
                            TYPE_REG
                        };
                    }
                    self.set_data(hdr.typeflag, hdr.size)?;
                    self.handle_sparse(&mut hdr)?;
                    return Ok(Some(hdr));
                }
            }
        }
    }

    /// Go's `readHeader`: `None` at a clean end of archive.
    fn read_header(&mut self) -> Result<Option<Header>> {
        let mut blk = [0u8; BLOCK];
        match self.fill(&mut blk)? {
            Fill::Full => {}
            Fill::Empty => return Ok(None),
            Fill::Partial => return Err(bad("unexpected end of layer stream inside a tar header")),
        }
        if blk.iter().all(|&b| b == 0) {
            match self.fill(&mut blk)? {
                Fill::Full => {}
                Fill::Empty => return Ok(None),
                Fill::Partial => {
                    return Err(bad("unexpected end of layer stream inside a tar header"))
                }
            }
            if blk.iter().all(|&b| b == 0) {
                return Ok(None);
            }
            return Err(bad("tar header after a zero block"));
        }

        let format =
            get_format(&blk).ok_or_else(|| bad("invalid tar header (bad checksum or magic)"))?;
        self.raw = blk;
        self.raw_gnu = format == Format::Gnu;

        let mut p = Parser::default();
        let mut hdr = Header {
            typeflag: blk[156],
            name: cstr(&blk[0..100]).to_vec(),
            linkname: cstr(&blk[157..257]).to_vec(),
            size: p.numeric(&blk[124..136]),
            mode: p.numeric(&blk[100..108]),
            uid: p.numeric(&blk[108..116]),
            gid: p.numeric(&blk[116..124]),
            ..Header::default()
        };
        hdr.mtime = p.numeric(&blk[136..148]) as Nanos * 1_000_000_000;

        if format != Format::V7 {
            hdr.devmajor = p.numeric(&blk[329..337]);
            hdr.devminor = p.numeric(&blk[337..345]);
            let mut prefix: &[u8] = &[];
            match format {
                Format::Ustar => prefix = cstr(&blk[345..500]),
                Format::Star => {
                    prefix = cstr(&blk[345..476]);
                    hdr.atime = Some(p.numeric(&blk[476..488]) as Nanos * 1_000_000_000);
                }
                Format::Gnu => {
                    let mut p2 = Parser::default();
                    if blk[345] != 0 {
                        hdr.atime = Some(p2.numeric(&blk[345..357]) as Nanos * 1_000_000_000);
                    }
                    if blk[357] != 0 {
                        p2.numeric(&blk[357..369]);
                    }
                    if p2.err {
                        // Pre-Go1.8 writers put a USTAR prefix here.
                        hdr.atime = None;
                        let s = cstr(&blk[345..500]);
                        if s.iter().all(|&b| b < 0x80) {
                            prefix = s;
                        }
                    }
                }
                Format::V7 => {}
            }
            if !prefix.is_empty() {
                let mut name = prefix.to_vec();
                name.push(b'/');
                name.extend_from_slice(&hdr.name);
                hdr.name = name;
            }
        }
        if p.err {
            return Err(bad(format!(
                "invalid numeric field in tar header {:?}",
                String::from_utf8_lossy(&hdr.name)
            )));
        }
        Ok(Some(hdr))
    }
}

fn is_header_only(t: u8) -> bool {
    matches!(
        t,
        TYPE_LINK | TYPE_SYMLINK | TYPE_CHAR | TYPE_BLOCK | TYPE_DIR | TYPE_FIFO
    )
}

/// Go's `appendSparseEntry` (at most 2^20 entries).
fn push_sparse(out: &mut Vec<(i64, i64)>, off: i64, len: i64) -> Result<()> {
    if out.len() >= 1 << 20 {
        return Err(bad("sparse map too long"));
    }
    out.push((off, len));
    Ok(())
}

/// Go's `readGNUSparseMap0x1`: `GNU.sparse.numblocks` pairs in `GNU.sparse.map`.
fn sparse_map_0x1(pax: &BTreeMap<Vec<u8>, Vec<u8>>) -> Result<Vec<(i64, i64)>> {
    let get = |k: &str| pax.get(k.as_bytes()).map(Vec::as_slice).unwrap_or(b"");
    let count = parse_int(get("GNU.sparse.numblocks"))
        .filter(|&n| n >= 0 && n.checked_mul(2).is_some())
        .ok_or_else(|| bad("invalid sparse map"))?;
    let map = get("GNU.sparse.map");
    let parts: Vec<&[u8]> = if map.is_empty() {
        Vec::new()
    } else {
        map.split(|&c| c == b',').collect()
    };
    if parts.len() as i64 != 2 * count {
        return Err(bad("invalid sparse map"));
    }
    let mut out = Vec::new();
    for pair in parts.chunks(2) {
        let (Some(off), Some(len)) = (parse_int(pair[0]), parse_int(pair[1])) else {
            return Err(bad("invalid sparse map"));
        };
        push_sparse(&mut out, off, len)?;
    }
    Ok(out)
}

/// Go's `validateSparseEntries`.
fn valid_sparse(map: &[(i64, i64)], size: i64) -> bool {
    if size < 0 {
        return false;
    }
    let mut pre_end = 0i64;
    for &(off, len) in map {
        if off < 0 || len < 0 || off > i64::MAX - len || off + len > size || pre_end > off {
            return false;
        }
        pre_end = off + len;
    }
    true
}

/// Go's `invertSparseEntries`: data fragments to holes, the last hole always present.
fn invert_sparse(map: &[(i64, i64)], size: i64) -> VecDeque<(i64, i64)> {
    let mut holes = VecDeque::new();
    let mut pre_off = 0i64;
    for &(off, len) in map {
        if len == 0 {
            continue;
        }
        if off - pre_off > 0 {
            holes.push_back((pre_off, off - pre_off));
        }
        pre_off = off + len;
    }
    holes.push_back((pre_off, size - pre_off));
    holes
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    V7,
    Ustar,
    Gnu,
    Star,
}

fn get_format(blk: &[u8; BLOCK]) -> Option<Format> {
    let mut p = Parser::default();
    let value = p.octal(&blk[148..156]);
    let (mut unsigned, mut signed) = (0i64, 0i64);
    for (i, &c) in blk.iter().enumerate() {
        let c = if (148..156).contains(&i) { b' ' } else { c };
        unsigned += c as i64;
        signed += c as i8 as i64;
    }
    if p.err || (value != unsigned && value != signed) {
        return None;
    }
    let magic = &blk[257..263];
    let version = &blk[263..265];
    let trailer = &blk[508..512];
    Some(if magic == b"ustar\0" && trailer == b"tar\0" {
        Format::Star
    } else if magic == b"ustar\0" {
        Format::Ustar
    } else if magic == b"ustar " && version == b" \0" {
        Format::Gnu
    } else {
        Format::V7
    })
}

/// The bytes up to the first NUL (Go's `parseString`).
fn cstr(b: &[u8]) -> &[u8] {
    match b.iter().position(|&c| c == 0) {
        Some(i) => &b[..i],
        None => b,
    }
}

#[derive(Default)]
struct Parser {
    err: bool,
}

impl Parser {
    /// Go's `parseNumeric`: base-256 when the high bit is set, else octal.
    fn numeric(&mut self, b: &[u8]) -> i64 {
        if !b.is_empty() && b[0] & 0x80 != 0 {
            let inv: u8 = if b[0] & 0x40 != 0 { 0xff } else { 0 };
            let mut x: u64 = 0;
            for (i, &c) in b.iter().enumerate() {
                let mut c = c ^ inv;
                if i == 0 {
                    c &= 0x7f;
                }
                if x >> 56 > 0 {
                    self.err = true;
                    return 0;
                }
                x = x << 8 | c as u64;
            }
            if x >> 63 > 0 {
                self.err = true;
                return 0;
            }
            return if inv == 0xff { !(x as i64) } else { x as i64 };
        }
        self.octal(b)
    }

    /// Go's `parseOctal`: trim spaces and NULs, cut at NUL, parse unsigned base 8.
    fn octal(&mut self, b: &[u8]) -> i64 {
        let trim = |c: &u8| *c == b' ' || *c == 0;
        let start = b.iter().position(|c| !trim(c)).unwrap_or(b.len());
        let end = b.iter().rposition(|c| !trim(c)).map_or(start, |i| i + 1);
        let s = cstr(&b[start..end]);
        if s.is_empty() {
            return 0;
        }
        let mut x: u64 = 0;
        for &c in s {
            if !(b'0'..=b'7').contains(&c) {
                self.err = true;
                return 0;
            }
            match x.checked_mul(8).map(|v| v + (c - b'0') as u64) {
                Some(v) => x = v,
                None => {
                    // strconv.ParseUint returns the max value with ErrRange.
                    self.err = true;
                    return u64::MAX as i64;
                }
            }
        }
        x as i64
    }
}

/// Go's `strconv.ParseInt(s, 10, 64)`.
pub(crate) fn parse_int(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.first() {
        Some(b'+') => (false, &s[1..]),
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() {
        return None;
    }
    let mut x: i128 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return None;
        }
        x = x * 10 + (c - b'0') as i128;
        if x > i64::MAX as i128 + 1 {
            return None;
        }
    }
    let x = if neg { -x } else { x };
    i64::try_from(x).ok()
}

/// Go's `parsePAXTime`.
fn parse_pax_time(s: &[u8]) -> Option<Nanos> {
    let (ss, sn) = match s.iter().position(|&c| c == b'.') {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, &b""[..]),
    };
    let secs = parse_int(ss)?;
    if sn.is_empty() {
        return Some(secs as Nanos * 1_000_000_000);
    }
    let mut nanos: i64 = 0;
    for (i, &c) in sn.iter().enumerate() {
        if !c.is_ascii_digit() {
            return None;
        }
        if i < 9 {
            nanos = nanos * 10 + (c - b'0') as i64;
        }
    }
    for _ in sn.len()..9 {
        nanos *= 10;
    }
    let base = secs as Nanos * 1_000_000_000;
    Some(if ss.first() == Some(&b'-') {
        base - nanos as Nanos
    } else {
        base + nanos as Nanos
    })
}

/// Go's `parsePAX` (GNU sparse 0.0 offset/numbytes pairs folded into `GNU.sparse.map`).
fn parse_pax(buf: &[u8]) -> Result<BTreeMap<Vec<u8>, Vec<u8>>> {
    let invalid = || bad("invalid PAX record");
    let mut out = BTreeMap::new();
    let mut sparse_map: Vec<Vec<u8>> = Vec::new();
    let mut s = buf;
    while !s.is_empty() {
        let sp = s.iter().position(|&c| c == b' ').ok_or_else(invalid)?;
        let n = parse_int(&s[..sp]).ok_or_else(invalid)?;
        if n < 5 || n > s.len() as i64 {
            return Err(invalid());
        }
        let rest = &s[sp + 1..];
        let n = n - (sp as i64 + 1);
        if n <= 0 {
            return Err(invalid());
        }
        let n = n as usize;
        if rest[n - 1] != b'\n' {
            return Err(invalid());
        }
        let rec = &rest[..n - 1];
        s = &rest[n..];
        let eq = rec.iter().position(|&c| c == b'=').ok_or_else(invalid)?;
        let (k, v) = (&rec[..eq], &rec[eq + 1..]);
        if k.is_empty() {
            return Err(invalid());
        }
        let has_nul = |b: &[u8]| b.contains(&0);
        let valid = match k {
            b"path" | b"linkpath" | b"uname" | b"gname" => !has_nul(v),
            _ => !has_nul(k),
        };
        if !valid {
            return Err(invalid());
        }
        match k {
            b"GNU.sparse.offset" | b"GNU.sparse.numbytes" => {
                let want_offset = sparse_map.len() % 2 == 0;
                if (want_offset && k != b"GNU.sparse.offset")
                    || (!want_offset && k != b"GNU.sparse.numbytes")
                    || v.contains(&b',')
                {
                    return Err(invalid());
                }
                sparse_map.push(v.to_vec());
            }
            _ => {
                out.insert(k.to_vec(), v.to_vec());
            }
        }
    }
    if !sparse_map.is_empty() {
        out.insert(b"GNU.sparse.map".to_vec(), sparse_map.join(&b","[..]));
    }
    Ok(out)
}

/// Go's `mergePAX`: empty values keep the header's own field.
fn merge_pax(hdr: &mut Header, records: BTreeMap<Vec<u8>, Vec<u8>>) -> Result<()> {
    for (k, v) in &records {
        if v.is_empty() {
            continue;
        }
        let invalid = || bad(format!("invalid PAX record {}", String::from_utf8_lossy(k)));
        match k.as_slice() {
            b"path" => hdr.name = v.clone(),
            b"linkpath" => hdr.linkname = v.clone(),
            b"uid" => hdr.uid = parse_int(v).ok_or_else(invalid)?,
            b"gid" => hdr.gid = parse_int(v).ok_or_else(invalid)?,
            b"atime" => hdr.atime = Some(parse_pax_time(v).ok_or_else(invalid)?),
            b"mtime" => hdr.mtime = parse_pax_time(v).ok_or_else(invalid)?,
            b"ctime" => {
                parse_pax_time(v).ok_or_else(invalid)?;
            }
            b"size" => hdr.size = parse_int(v).ok_or_else(invalid)?,
            _ => {}
        }
    }
    hdr.pax = records;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_fields_follow_go() {
        let mut p = Parser::default();
        assert_eq!(p.numeric(b"0000644\0"), 0o644);
        assert_eq!(p.numeric(b"        "), 0);
        assert_eq!(p.numeric(b"\0\0\0\0"), 0);
        assert_eq!(p.numeric(b" 12 \0"), 0o12);
        assert_eq!(p.numeric(&[0x80, 0, 0, 0, 0, 0, 1, 0]), 256);
        assert_eq!(p.numeric(&[0xff; 8]), -1);
        assert!(!p.err);
        p.numeric(b"0009\0");
        assert!(p.err);
    }

    #[test]
    fn pax_times_and_ints_follow_go() {
        assert_eq!(parse_pax_time(b"1.5"), Some(1_500_000_000));
        assert_eq!(parse_pax_time(b"-1.5"), Some(-1_500_000_000));
        assert_eq!(parse_pax_time(b"1.1234567899"), Some(1_123_456_789));
        assert_eq!(parse_pax_time(b".5"), None);
        assert_eq!(parse_pax_time(b"1.x"), None);
        assert_eq!(parse_int(b"+7"), Some(7));
        assert_eq!(parse_int(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_int(b"9223372036854775808"), None);
        assert_eq!(parse_int(b"1_0"), None);
    }

    #[test]
    fn pax_records_follow_go() {
        let r = parse_pax(b"30 mtime=1432668921.098285006\n11 a=b\nc\n").unwrap_err();
        assert!(r.to_string().contains("PAX"));
        let r = parse_pax(b"11 a=b\nc=d\n").unwrap();
        assert_eq!(r.get(&b"a"[..]).unwrap(), b"b\nc=d");
        assert!(parse_pax(b"5 k=1\n").is_err());
        assert!(parse_pax(b"6 k=1\n").is_ok());
        assert!(parse_pax(b"16 path=a\0b\n").is_err());
    }
}
