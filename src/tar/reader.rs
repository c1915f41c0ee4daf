//! A tar reader that accepts and rejects exactly what Go's `archive/tar` reader does (the reader
//! containerd's `archive.Apply` uses): PAX records (path, linkpath, size, uid, gid, times with
//! fractions, `SCHILY.xattr.*`), GNU long names and links, the USTAR prefix, STAR and GNU
//! atimes, base-256 numbers, empty numeric fields as 0, signed or unsigned checksums,
//! header-only types that never have data, `TypeRegA` with a trailing `/` as a directory, and
//! Go's end-of-archive rules. Sparse entries are expanded by [`sparse`].

mod sparse;

use std::io::{self, BufRead};

use super::pax::{key, parse_int, parse_pax, parse_pax_time, PaxRecords};
use super::{
    bad, BLOCK_SIZE, TYPE_BLOCK, TYPE_CHAR, TYPE_DIR, TYPE_FIFO, TYPE_GNU_LONGLINK,
    TYPE_GNU_LONGNAME, TYPE_LINK, TYPE_REG, TYPE_REGA, TYPE_SYMLINK, TYPE_XGLOBAL, TYPE_XHEADER,
};
use crate::error::{Error, Result};
use sparse::SparseState;

/// Go's `maxSpecialFileSize`: the largest PAX or GNU long-name payload accepted.
const MAX_SPECIAL_FILE_SIZE: i64 = 1 << 20;

/// Nanoseconds since the Unix epoch (wide enough for any `i64` seconds plus fraction).
pub type Nanos = i128;

/// One entry as Go's `tar.Reader.Next` returns it (only the fields apply uses); public as the
/// entries [`crate::list`] yields.
#[derive(Debug, Clone, Default)]
pub struct EntryHeader {
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
    pub pax: std::collections::BTreeMap<Vec<u8>, Vec<u8>>,
}

/// A failed read of the layer stream: cut short, or what the stage before us reported.
pub(crate) fn read_error(e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        bad("unexpected end of layer stream")
    } else {
        Error::from_io("read layer", e)
    }
}

/// Sequential reader over a buffered byte stream.
pub(crate) struct TarReader<R> {
    r: R,
    /// Data bytes of the current entry not yet read.
    remaining: u64,
    /// Padding after the current entry's data.
    pad: u64,
    done: bool,
    /// The holes of the current entry when it is sparse (Go's `sparseFileReader`).
    sparse: Option<SparseState>,
    /// The last header block read, and whether it was GNU format (for old GNU sparse maps).
    raw: [u8; BLOCK_SIZE],
    raw_gnu: bool,
}

/// How a read of exactly `n` bytes ended.
enum Fill {
    Full,
    /// EOF before the first byte.
    Empty,
    /// EOF after some bytes.
    Partial,
}

impl<R: BufRead> TarReader<R> {
    pub(crate) fn new(r: R) -> Self {
        TarReader {
            r,
            remaining: 0,
            pad: 0,
            done: false,
            sparse: None,
            raw: [0u8; BLOCK_SIZE],
            raw_gnu: false,
        }
    }

    /// The underlying stream (positioned after the archive once `next` returned `None`).
    pub(crate) fn get_mut(&mut self) -> &mut R {
        &mut self.r
    }

    fn fill(&mut self, buf: &mut [u8]) -> Result<Fill> {
        let mut n = 0;
        while n < buf.len() {
            let avail = self.r.fill_buf().map_err(read_error)?;
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
            let avail = self.r.fill_buf().map_err(read_error)?;
            if avail.is_empty() {
                return Ok(false);
            }
            let k = (avail.len() as u64).min(n) as usize;
            self.r.consume(k);
            n -= k as u64;
        }
        Ok(true)
    }

    /// Hand the next chunk of the current entry's data to `f` (at most what `fill_buf`
    /// offers, no copy); returns how many bytes were passed, 0 at the end of the data.
    pub(crate) fn read_chunk(&mut self, f: impl FnOnce(&[u8]) -> Result<()>) -> Result<usize> {
        if self.sparse.is_some() {
            return self.read_sparse_chunk(f);
        }
        if self.remaining == 0 {
            return Ok(0);
        }
        let avail = self.r.fill_buf().map_err(read_error)?;
        if avail.is_empty() {
            return Err(bad("unexpected end of layer stream inside file data"));
        }
        let k = (avail.len() as u64).min(self.remaining) as usize;
        f(&avail[..k])?;
        self.r.consume(k);
        self.remaining -= k as u64;
        Ok(k)
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
        self.pad = (BLOCK_SIZE as u64 - nb as u64 % BLOCK_SIZE as u64) % BLOCK_SIZE as u64;
        Ok(())
    }

    /// The next entry, or `None` at the end of the archive.
    pub(crate) fn next_entry(&mut self) -> Result<Option<EntryHeader>> {
        if self.done {
            return Ok(None);
        }
        let res = self.next_inner();
        if !matches!(res, Ok(Some(_))) {
            self.done = true;
        }
        res
    }

    fn next_inner(&mut self) -> Result<Option<EntryHeader>> {
        let mut pax: Option<PaxRecords> = None;
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
                        if let Some(p) = records.get(key::PATH).filter(|v| !v.is_empty()) {
                            hdr.name = p.clone();
                        }
                        return Ok(Some(EntryHeader {
                            typeflag: TYPE_XGLOBAL,
                            name: hdr.name,
                            pax: records,
                            ..EntryHeader::default()
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
    fn read_header(&mut self) -> Result<Option<EntryHeader>> {
        let mut blk = [0u8; BLOCK_SIZE];
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
        let mut hdr = EntryHeader {
            typeflag: blk[156],
            name: cstr(&blk[0..100]).to_vec(),
            linkname: cstr(&blk[157..257]).to_vec(),
            size: p.numeric(&blk[124..136]),
            mode: p.numeric(&blk[100..108]),
            uid: p.numeric(&blk[108..116]),
            gid: p.numeric(&blk[116..124]),
            ..EntryHeader::default()
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
                    // The ctime is of no use to apply, but Go parses it, and refuses the
                    // header when it does not parse.
                    p.numeric(&blk[488..500]);
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    V7,
    Ustar,
    Gnu,
    Star,
}

fn get_format(blk: &[u8; BLOCK_SIZE]) -> Option<Format> {
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

/// Go's `mergePAX`: empty values keep the header's own field.
fn merge_pax(hdr: &mut EntryHeader, records: PaxRecords) -> Result<()> {
    for (k, v) in &records {
        if v.is_empty() {
            continue;
        }
        let invalid = || bad(format!("invalid PAX record {}", String::from_utf8_lossy(k)));
        match k.as_slice() {
            key::PATH => hdr.name = v.clone(),
            key::LINKPATH => hdr.linkname = v.clone(),
            key::UID => hdr.uid = parse_int(v).ok_or_else(invalid)?,
            key::GID => hdr.gid = parse_int(v).ok_or_else(invalid)?,
            key::ATIME => hdr.atime = Some(parse_pax_time(v).ok_or_else(invalid)?),
            key::MTIME => hdr.mtime = parse_pax_time(v).ok_or_else(invalid)?,
            key::CTIME => {
                parse_pax_time(v).ok_or_else(invalid)?;
            }
            key::SIZE => hdr.size = parse_int(v).ok_or_else(invalid)?,
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
}
