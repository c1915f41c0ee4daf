//! Sparse entries, as Go's reader expands them: old GNU (type `S`, maps in the header and its
//! extension blocks) and GNU PAX formats 0.0, 0.1 (maps in PAX records) and 1.0 (a map at the
//! start of the data). The reader then yields the logical file, holes read as zeros.

use std::collections::VecDeque;
use std::io::BufRead;

use super::{
    is_header_only, read_error, EntryHeader, Fill, Parser, TarReader, MAX_SPECIAL_FILE_SIZE,
};
use crate::error::Result;
use crate::tar::pax::{key, parse_int, PaxRecords};
use crate::tar::{bad, BLOCK_SIZE, TYPE_GNU_SPARSE};

/// Logical reading state of a sparse entry: holes (offset, length) in order, the last one
/// always kept (possibly empty), and the logical position.
pub(super) struct SparseState {
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

impl<R: BufRead> TarReader<R> {
    /// A chunk of a sparse entry: file data from the archive, or zeros for a hole.
    pub(super) fn read_sparse_chunk(
        &mut self,
        f: impl FnOnce(&[u8]) -> Result<()>,
    ) -> Result<usize> {
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
            let avail = self.r.fill_buf().map_err(read_error)?;
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
                    total += BLOCK_SIZE;
                    if total > MAX_SPECIAL_FILE_SIZE as usize {
                        return Err(bad("sparse map too long"));
                    }
                    if this.remaining < BLOCK_SIZE as u64 {
                        return Err(bad("unexpected end of sparse map"));
                    }
                    let mut blk = [0u8; BLOCK_SIZE];
                    if !matches!(this.fill(&mut blk)?, Fill::Full) {
                        return Err(bad("unexpected end of layer stream inside a sparse map"));
                    }
                    this.remaining -= BLOCK_SIZE as u64;
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
    fn read_old_gnu_sparse_map(&mut self, hdr: &mut EntryHeader) -> Result<Vec<(i64, i64)>> {
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
    pub(super) fn handle_sparse(&mut self, hdr: &mut EntryHeader) -> Result<()> {
        let map = if hdr.typeflag == TYPE_GNU_SPARSE {
            Some(self.read_old_gnu_sparse_map(hdr)?)
        } else {
            let get = |k: &[u8]| hdr.pax.get(k).cloned().unwrap_or_default();
            let (major, minor) = (get(key::GNU_SPARSE_MAJOR), get(key::GNU_SPARSE_MINOR));
            let is_1x0 = match (major.as_slice(), minor.as_slice()) {
                (b"0", b"0") | (b"0", b"1") => Some(false),
                (b"1", b"0") => Some(true),
                _ if !major.is_empty() || !minor.is_empty() => None,
                _ if !get(key::GNU_SPARSE_MAP).is_empty() => Some(false),
                _ => None,
            };
            match is_1x0 {
                None => None,
                Some(is_1x0) => {
                    let name = get(key::GNU_SPARSE_NAME);
                    if !name.is_empty() {
                        hdr.name = name;
                    }
                    let mut size = get(key::GNU_SPARSE_SIZE);
                    if size.is_empty() {
                        size = get(key::GNU_SPARSE_REALSIZE);
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
fn sparse_map_0x1(pax: &PaxRecords) -> Result<Vec<(i64, i64)>> {
    let get = |k: &[u8]| pax.get(k).map(Vec::as_slice).unwrap_or(b"");
    let count = parse_int(get(key::GNU_SPARSE_NUMBLOCKS))
        .filter(|&n| n >= 0 && n.checked_mul(2).is_some())
        .ok_or_else(|| bad("invalid sparse map"))?;
    let map = get(key::GNU_SPARSE_MAP);
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
