//! PAX extended header records (`"<len> <key>=<value>\n"`), written by the encoder and read by
//! the reader.

use std::collections::BTreeMap;

use super::{bad, Nanos};
use crate::error::Result;

/// The records of one PAX header by key (later duplicates win, as in Go).
pub(crate) type PaxRecords = BTreeMap<Vec<u8>, Vec<u8>>;

/// The record keys the encoder and the reader know (Go's `paxPath` and friends).
pub(crate) mod key {
    pub(crate) const PATH: &[u8] = b"path";
    pub(crate) const LINKPATH: &[u8] = b"linkpath";
    pub(crate) const UNAME: &[u8] = b"uname";
    pub(crate) const GNAME: &[u8] = b"gname";
    pub(crate) const UID: &[u8] = b"uid";
    pub(crate) const GID: &[u8] = b"gid";
    pub(crate) const SIZE: &[u8] = b"size";
    pub(crate) const MTIME: &[u8] = b"mtime";
    pub(crate) const ATIME: &[u8] = b"atime";
    pub(crate) const CTIME: &[u8] = b"ctime";
    /// Prefix of the records carrying extended attributes.
    pub(crate) const XATTR_PREFIX: &[u8] = b"SCHILY.xattr.";
    /// The one xattr containerd's change writer carries.
    pub(crate) const XATTR_CAPABILITY: &[u8] = b"SCHILY.xattr.security.capability";
    pub(crate) const GNU_SPARSE_MAJOR: &[u8] = b"GNU.sparse.major";
    pub(crate) const GNU_SPARSE_MINOR: &[u8] = b"GNU.sparse.minor";
    pub(crate) const GNU_SPARSE_NAME: &[u8] = b"GNU.sparse.name";
    pub(crate) const GNU_SPARSE_SIZE: &[u8] = b"GNU.sparse.size";
    pub(crate) const GNU_SPARSE_REALSIZE: &[u8] = b"GNU.sparse.realsize";
    pub(crate) const GNU_SPARSE_NUMBLOCKS: &[u8] = b"GNU.sparse.numblocks";
    pub(crate) const GNU_SPARSE_MAP: &[u8] = b"GNU.sparse.map";
    pub(crate) const GNU_SPARSE_OFFSET: &[u8] = b"GNU.sparse.offset";
    pub(crate) const GNU_SPARSE_NUMBYTES: &[u8] = b"GNU.sparse.numbytes";
}

/// Go's `formatPAXRecord`: `"<len> <key>=<value>\n"` where len counts the whole record.
pub(crate) fn format_pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let base = key.len() + value.len() + 3;
    let mut size = base + base.to_string().len();
    if base + size.to_string().len() != size {
        size = base + size.to_string().len();
    }
    let mut rec = Vec::with_capacity(size);
    rec.extend_from_slice(size.to_string().as_bytes());
    rec.push(b' ');
    rec.extend_from_slice(key);
    rec.push(b'=');
    rec.extend_from_slice(value);
    rec.push(b'\n');
    debug_assert_eq!(rec.len(), size);
    rec
}

/// Go's `parsePAX` (GNU sparse 0.0 offset/numbytes pairs folded into `GNU.sparse.map`).
pub(crate) fn parse_pax(buf: &[u8]) -> Result<PaxRecords> {
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
            key::PATH | key::LINKPATH | key::UNAME | key::GNAME => !has_nul(v),
            _ => !has_nul(k),
        };
        if !valid {
            return Err(invalid());
        }
        match k {
            key::GNU_SPARSE_OFFSET | key::GNU_SPARSE_NUMBYTES => {
                let want_offset = sparse_map.len().is_multiple_of(2);
                if (want_offset && k != key::GNU_SPARSE_OFFSET)
                    || (!want_offset && k != key::GNU_SPARSE_NUMBYTES)
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
        out.insert(key::GNU_SPARSE_MAP.to_vec(), sparse_map.join(&b","[..]));
    }
    Ok(out)
}

/// Go's `parsePAXTime`.
pub(crate) fn parse_pax_time(s: &[u8]) -> Option<Nanos> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_length_counts_its_own_digits() {
        assert_eq!(format_pax_record(b"path", b"abc"), b"12 path=abc\n");
        assert_eq!(format_pax_record(b"a", b"bcd"), b"8 a=bcd\n");
        for vlen in 0..300 {
            let v = vec![b'v'; vlen];
            let r = format_pax_record(b"key", &v);
            let sp = r.iter().position(|&c| c == b' ').unwrap();
            let n: usize = std::str::from_utf8(&r[..sp]).unwrap().parse().unwrap();
            assert_eq!(n, r.len(), "value length {vlen}");
        }
        assert_eq!(format_pax_record(b"k", &[b'v'; 4]), b"9 k=vvvv\n");
        assert_eq!(format_pax_record(b"k", &[b'v'; 3]), b"8 k=vvv\n");
        assert_eq!(
            format_pax_record(b"k", &[b'v'; 94]),
            b"101 k="
                .iter()
                .chain(&[b'v'; 94])
                .chain(b"\n")
                .copied()
                .collect::<Vec<u8>>()
        );
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
