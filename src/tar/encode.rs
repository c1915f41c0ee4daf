//! The header encoder: a [`HeaderToWrite`] to the bytes Go's `archive/tar` writer produces
//! for it, which is what containerd's layer digests depend on.

use std::borrow::Cow;

use super::pax::{format_pax_record, key};
use super::{BLOCK_SIZE, TYPE_XHEADER};
use crate::error::{Error, Result};

const NAME_SIZE: usize = 100;
const PREFIX_SIZE: usize = 155;
/// Go's zero `time.Time` (January 1, year 1, UTC) in Unix seconds: Go treats it as "no time"
/// and writes 0 instead.
const GO_ZERO_TIME_UNIX: i64 = -62_135_596_800;

/// The fields of a tar header that containerd's change writer sets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct HeaderToWrite {
    pub(crate) name: Vec<u8>,
    pub(crate) linkname: Vec<u8>,
    pub(crate) typeflag: u8,
    pub(crate) mode: i64,
    pub(crate) uid: i64,
    pub(crate) gid: i64,
    pub(crate) size: i64,
    /// Whole seconds (already truncated).
    pub(crate) mtime: i64,
    pub(crate) devmajor: i64,
    pub(crate) devminor: i64,
    /// Bytes of the `security.capability` xattr, carried as a PAX record when non-empty.
    pub(crate) capability: Option<Vec<u8>>,
    /// Every other xattr to carry, as (name, value), each as a `SCHILY.xattr.NAME` record
    /// (the all-xattrs compare; empty for containerd's output).
    pub(crate) xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Go's `isASCII`: no byte >= 0x80 and no NUL.
fn is_ascii(s: &[u8]) -> bool {
    s.iter().all(|&c| c != 0 && c < 0x80)
}

/// Go's `toASCII`: drop every byte >= 0x80 (any non-ASCII rune, valid or not) and NULs.
fn to_ascii(s: &[u8]) -> Vec<u8> {
    s.iter().copied().filter(|&c| c != 0 && c < 0x80).collect()
}

/// Go's `fitsInOctal` for a field of `n` bytes (n-1 digits and a NUL).
fn fits_in_octal(n: usize, x: i64) -> bool {
    let oct_bits = (n as u32 - 1) * 3;
    x >= 0 && (n >= 22 || x < 1i64 << oct_bits)
}

/// Go's `formatter.formatString`: raw bytes, a NUL if shorter, truncation if longer (with the
/// trailing-slash fix Go applies to a truncated name).
fn format_string(field: &mut [u8], s: &[u8]) {
    let n = s.len().min(field.len());
    field[..n].copy_from_slice(&s[..n]);
    if s.len() < field.len() {
        field[s.len()] = 0;
    }
    if s.len() > field.len() && field[field.len() - 1] == b'/' {
        let head = &s[..field.len() - 1];
        let kept = head.len() - head.iter().rev().take_while(|&&c| c == b'/').count();
        field[kept] = 0;
    }
}

/// Go's `formatter.formatOctal`: zero-padded octal leaving room for a NUL; 0 if it does not fit.
fn format_octal(field: &mut [u8], x: i64) {
    let x = if fits_in_octal(field.len(), x) { x } else { 0 };
    let digits = format!("{x:o}");
    let pad = (field.len() - 1).saturating_sub(digits.len());
    let mut s = vec![b'0'; pad];
    s.extend_from_slice(digits.as_bytes());
    format_string(field, &s);
}

/// Go's `splitUSTARPath`: split a long ASCII name at a `/` into prefix (<= 155) and name (<= 100).
fn split_ustar_path(name: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut length = name.len();
    if length <= NAME_SIZE || !is_ascii(name) {
        return None;
    } else if length > PREFIX_SIZE + 1 {
        length = PREFIX_SIZE + 1;
    } else if name[length - 1] == b'/' {
        length -= 1;
    }
    let i = name[..length].iter().rposition(|&c| c == b'/')?;
    let nlen = name.len() - i - 1;
    if i == 0 || nlen > NAME_SIZE || nlen == 0 || i > PREFIX_SIZE {
        return None;
    }
    Some((&name[..i], &name[i + 1..]))
}

/// Go's `path.Join(dir, "PaxHeaders.0", file)` after `path.Split(name)`, for clean names.
fn pax_header_name(name: &[u8]) -> Vec<u8> {
    let split = name.iter().rposition(|&c| c == b'/').map_or(0, |i| i + 1);
    let (dir, file) = name.split_at(split);
    let dir = &dir[..dir.len() - dir.iter().rev().take_while(|&&c| c == b'/').count()];
    let mut out = Vec::with_capacity(name.len() + 14);
    if !dir.is_empty() {
        out.extend_from_slice(dir);
        out.push(b'/');
    }
    out.extend_from_slice(b"PaxHeaders.0");
    if !file.is_empty() {
        out.push(b'/');
        out.extend_from_slice(file);
    }
    out
}

fn set_ustar_magic_and_checksum(blk: &mut [u8; BLOCK_SIZE]) {
    blk[257..263].copy_from_slice(b"ustar\0");
    blk[263..265].copy_from_slice(b"00");
    let sum: i64 = blk
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            if (148..156).contains(&i) {
                b' ' as i64
            } else {
                c as i64
            }
        })
        .sum();
    format_octal(&mut blk[148..155], sum);
    blk[155] = b' ';
}

/// Go's `templateV7Plus`: every field but prefix, magic and checksum.
fn template_v7_plus(h: &HeaderToWrite, name: &[u8], linkname: &[u8]) -> [u8; BLOCK_SIZE] {
    let mut blk = [0u8; BLOCK_SIZE];
    blk[156] = h.typeflag;
    format_string(&mut blk[0..100], name);
    format_string(&mut blk[157..257], linkname);
    format_octal(&mut blk[100..108], h.mode);
    format_octal(&mut blk[108..116], h.uid);
    format_octal(&mut blk[116..124], h.gid);
    format_octal(&mut blk[124..136], h.size);
    let mtime = if h.mtime == GO_ZERO_TIME_UNIX {
        0
    } else {
        h.mtime
    };
    format_octal(&mut blk[136..148], mtime);
    format_string(&mut blk[265..297], b"");
    format_string(&mut blk[297..329], b"");
    format_octal(&mut blk[329..337], h.devmajor);
    format_octal(&mut blk[337..345], h.devminor);
    blk
}

/// PAX records to write as (key, value), sorted by key.
type RecordsToWrite = Vec<(Cow<'static, [u8]>, Vec<u8>)>;

/// The PAX records Go's `allowedFormats` would produce, and whether USTAR can encode `h`.
fn pax_records(h: &HeaderToWrite) -> Result<(RecordsToWrite, bool)> {
    let mut recs: RecordsToWrite = Vec::new();
    let mut ustar_ok = true;
    if !is_ascii(&h.name) || h.name.len() > NAME_SIZE {
        if split_ustar_path(&h.name).is_none() {
            ustar_ok = false;
        }
        recs.push((Cow::Borrowed(key::PATH), h.name.clone()));
    }
    if !is_ascii(&h.linkname) || h.linkname.len() > NAME_SIZE {
        ustar_ok = false;
        recs.push((Cow::Borrowed(key::LINKPATH), h.linkname.clone()));
    }
    for (key, value, width) in [
        (key::UID, h.uid, 8),
        (key::GID, h.gid, 8),
        (key::SIZE, h.size, 12),
    ] {
        if !fits_in_octal(width, value) {
            ustar_ok = false;
            recs.push((Cow::Borrowed(key), value.to_string().into_bytes()));
        }
    }
    for (what, value) in [("device major", h.devmajor), ("device minor", h.devminor)] {
        if !fits_in_octal(8, value) {
            // Go falls back to a GNU header here; Linux device numbers never get there.
            return Err(Error::InvalidArgument(format!(
                "{what} {value} of {} does not fit a tar header",
                String::from_utf8_lossy(&h.name)
            )));
        }
    }
    if h.mtime != GO_ZERO_TIME_UNIX && !fits_in_octal(12, h.mtime) {
        ustar_ok = false;
        recs.push((Cow::Borrowed(key::MTIME), h.mtime.to_string().into_bytes()));
    }
    if let Some(cap) = h.capability.as_ref().filter(|c| !c.is_empty()) {
        ustar_ok = false;
        recs.push((Cow::Borrowed(key::XATTR_CAPABILITY), cap.clone()));
    }
    for (name, value) in &h.xattrs {
        // Go's `validPAXRecord`: a key holding `=` cannot be written (a NUL cannot be in a
        // name the kernel lists).
        if name.contains(&b'=') {
            return Err(Error::InvalidArgument(format!(
                "xattr {:?} of {} has a '=' in its name, which a PAX record cannot hold",
                String::from_utf8_lossy(name),
                String::from_utf8_lossy(&h.name)
            )));
        }
        ustar_ok = false;
        recs.push((
            Cow::Owned([key::XATTR_PREFIX, name].concat()),
            value.clone(),
        ));
    }
    // Go's `writePAXHeader` sorts the keys (`sort.Strings`: bytewise).
    recs.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((recs, ustar_ok))
}

/// Encode `h` as Go's tar writer would (with `Format: FormatPAX` or unknown; the two agree for
/// the headers containerd writes): one USTAR block, or a PAX extended header (block + padded
/// records) followed by the main block. Appends to `out`.
pub(crate) fn encode_header(h: &HeaderToWrite, out: &mut Vec<u8>) -> Result<()> {
    let (recs, ustar_ok) = pax_records(h)?;
    if ustar_ok {
        let (prefix, name) = split_ustar_path(&h.name).unwrap_or((b"", &h.name));
        let mut blk = template_v7_plus(h, name, &h.linkname);
        format_string(&mut blk[345..500], prefix);
        set_ustar_magic_and_checksum(&mut blk);
        out.extend_from_slice(&blk);
        return Ok(());
    }

    let mut data = Vec::new();
    for (k, v) in &recs {
        data.extend_from_slice(&format_pax_record(k, v));
    }
    let mut pax_name = to_ascii(&pax_header_name(&h.name));
    pax_name.truncate(NAME_SIZE);
    while pax_name.last() == Some(&b'/') {
        pax_name.pop();
    }
    let mut xblk = [0u8; BLOCK_SIZE];
    xblk[156] = TYPE_XHEADER;
    format_string(&mut xblk[0..100], &pax_name);
    format_octal(&mut xblk[100..108], 0);
    format_octal(&mut xblk[108..116], 0);
    format_octal(&mut xblk[116..124], 0);
    format_octal(&mut xblk[124..136], data.len() as i64);
    format_octal(&mut xblk[136..148], 0);
    set_ustar_magic_and_checksum(&mut xblk);
    out.extend_from_slice(&xblk);
    let padded = data.len().div_ceil(BLOCK_SIZE) * BLOCK_SIZE;
    data.resize(padded, 0);
    out.extend_from_slice(&data);

    let mut blk = template_v7_plus(h, &to_ascii(&h.name), &to_ascii(&h.linkname));
    set_ustar_magic_and_checksum(&mut blk);
    out.extend_from_slice(&blk);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tar::{TYPE_REG, TYPE_SYMLINK};

    fn field(blk: &[u8], off: usize, len: usize) -> &[u8] {
        &blk[off..off + len]
    }

    fn reg(name: &[u8]) -> HeaderToWrite {
        HeaderToWrite {
            name: name.to_vec(),
            typeflag: TYPE_REG,
            mode: 0o644,
            uid: 1000,
            gid: 1000,
            size: 5,
            mtime: 1_700_000_000,
            ..HeaderToWrite::default()
        }
    }

    fn checksum_ok(blk: &[u8]) -> bool {
        let sum: u64 = blk
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    c as u64
                }
            })
            .sum();
        let text = std::str::from_utf8(&blk[148..154]).unwrap();
        u64::from_str_radix(text, 8).unwrap() == sum && blk[154] == 0 && blk[155] == b' '
    }

    #[test]
    fn octal_fields_are_zero_padded_and_nul_terminated() {
        let mut out = Vec::new();
        encode_header(&reg(b"file"), &mut out).unwrap();
        assert_eq!(out.len(), 512);
        assert_eq!(field(&out, 100, 8), b"0000644\0");
        assert_eq!(field(&out, 108, 8), b"0001750\0");
        assert_eq!(field(&out, 116, 8), b"0001750\0");
        assert_eq!(field(&out, 124, 12), b"00000000005\0");
        assert_eq!(
            field(&out, 136, 12),
            format!("{:011o}\0", 1_700_000_000).as_bytes()
        );
        assert_eq!(field(&out, 329, 8), b"0000000\0");
        assert_eq!(field(&out, 337, 8), b"0000000\0");
        assert_eq!(field(&out, 257, 6), b"ustar\0");
        assert_eq!(field(&out, 263, 2), b"00");
        assert_eq!(out[156], b'0');
        assert!(checksum_ok(&out));
    }

    #[test]
    fn strings_get_nul_only_when_shorter_than_field() {
        let mut out = Vec::new();
        encode_header(&reg(b"file"), &mut out).unwrap();
        assert_eq!(field(&out, 0, 5), b"file\0");
        assert!(out[265..329].iter().all(|&c| c == 0), "uname/gname empty");
        let name = vec![b'n'; 100];
        let mut out = Vec::new();
        encode_header(&reg(&name), &mut out).unwrap();
        assert_eq!(out.len(), 512, "100 bytes fit the name field");
        assert_eq!(field(&out, 0, 100), &name[..]);
        assert_eq!(out[100], b'0', "no NUL after a full field: mode follows");
        let mut h = reg(b"link");
        h.typeflag = TYPE_SYMLINK;
        h.size = 0;
        h.linkname = vec![b't'; 100];
        let mut out = Vec::new();
        encode_header(&h, &mut out).unwrap();
        assert_eq!(out.len(), 512);
        assert_eq!(field(&out, 157, 100), &h.linkname[..]);
    }

    #[test]
    fn long_ascii_names_split_into_prefix() {
        // 101 bytes: "d/" + 99 → prefix "d", name 99 bytes.
        let mut name = b"d/".to_vec();
        name.extend(vec![b'x'; 99]);
        let mut out = Vec::new();
        encode_header(&reg(&name), &mut out).unwrap();
        assert_eq!(out.len(), 512);
        assert_eq!(field(&out, 345, 2), b"d\0");
        assert_eq!(
            field(&out, 0, 100),
            &[&vec![b'x'; 99][..], b"\0"].concat()[..]
        );
        // Prefix of exactly 155 and name of exactly 100.
        let name = [vec![b'p'; 155], b"/".to_vec(), vec![b'n'; 100]].concat();
        let mut out = Vec::new();
        encode_header(&reg(&name), &mut out).unwrap();
        assert_eq!(out.len(), 512);
        assert_eq!(field(&out, 345, 155), &vec![b'p'; 155][..]);
        assert_eq!(field(&out, 0, 100), &vec![b'n'; 100][..]);
        // Prefix of 156 cannot be used → PAX.
        let name = [vec![b'p'; 156], b"/".to_vec(), vec![b'n'; 10]].concat();
        let mut out = Vec::new();
        encode_header(&reg(&name), &mut out).unwrap();
        assert_eq!(out.len(), 512 * 3);
        // Name part of 101 → PAX.
        let name = [b"p/".to_vec(), vec![b'n'; 101]].concat();
        let mut out = Vec::new();
        encode_header(&reg(&name), &mut out).unwrap();
        assert_eq!(out[156], b'x');
        // No '/' at all → PAX.
        let mut out = Vec::new();
        encode_header(&reg(&[b'n'; 101]), &mut out).unwrap();
        assert_eq!(out[156], b'x');
        // A directory name ending in '/' right after the limit: the trailing slash is ignored
        // when looking for the split point.
        let name = [
            vec![b'p'; 10],
            b"/".to_vec(),
            vec![b'n'; 100],
            b"/".to_vec(),
        ]
        .concat();
        assert_eq!(
            split_ustar_path(&name),
            None,
            "name part would be 101 bytes with the '/'"
        );
        let name = [vec![b'p'; 155], b"/".to_vec(), vec![b'n'; 5], b"/".to_vec()].concat();
        assert_eq!(split_ustar_path(&name).map(|(p, _)| p.len()), Some(155));
    }

    #[test]
    fn pax_header_for_non_ascii_name() {
        let name = "dir/caf\u{e9}".as_bytes();
        let mut out = Vec::new();
        encode_header(&reg(name), &mut out).unwrap();
        assert_eq!(out.len(), 512 * 3);
        let x = &out[..512];
        assert_eq!(x[156], b'x');
        assert_eq!(field(x, 0, 24), b"dir/PaxHeaders.0/caf\0\0\0\0");
        assert_eq!(field(x, 100, 8), b"0000000\0");
        assert_eq!(field(x, 108, 8), b"0000000\0");
        assert_eq!(field(x, 136, 12), b"00000000000\0");
        assert!(x[157..257].iter().all(|&c| c == 0), "linkname all NUL");
        assert!(
            x[329..345].iter().all(|&c| c == 0),
            "devmajor/minor all NUL"
        );
        let rec = format_pax_record(b"path", name);
        assert_eq!(
            field(x, 124, 12),
            format!("{:011o}\0", rec.len()).as_bytes()
        );
        assert!(checksum_ok(x));
        assert_eq!(&out[512..512 + rec.len()], &rec[..]);
        assert!(out[512 + rec.len()..1024].iter().all(|&c| c == 0));
        let main = &out[1024..];
        assert_eq!(field(main, 0, 9), b"dir/caf\0\0");
        assert_eq!(field(main, 329, 8), b"0000000\0");
        assert!(checksum_ok(main));
    }

    #[test]
    fn pax_header_name_of_directory_and_top_level() {
        assert_eq!(pax_header_name(b"a/b/"), b"a/b/PaxHeaders.0");
        assert_eq!(pax_header_name(b"b"), b"PaxHeaders.0/b");
        assert_eq!(pax_header_name(b"a/b"), b"a/PaxHeaders.0/b");
    }

    #[test]
    fn capability_forces_pax_with_whole_long_name() {
        let name = [b"d/".to_vec(), vec![b'x'; 120]].concat();
        let mut h = reg(&name);
        h.capability = Some(vec![1, 0, 0, 2, 0]);
        let mut out = Vec::new();
        encode_header(&h, &mut out).unwrap();
        let cap = format_pax_record(key::XATTR_CAPABILITY, &[1, 0, 0, 2, 0]);
        let path = format_pax_record(b"path", &name);
        let data = [cap, path].concat();
        assert_eq!(
            &out[512..512 + data.len()],
            &data[..],
            "records sorted: SCHILY < path"
        );
        let main = &out[out.len() - 512..];
        assert_eq!(field(main, 0, 100), &name[..100], "truncated, not split");
        assert!(
            main[345..500].iter().all(|&c| c == 0),
            "no prefix in PAX mode"
        );
        // The PaxHeaders name is truncated to 100 bytes.
        assert_eq!(
            &out[..100],
            &[b"d/PaxHeaders.0/".to_vec(), vec![b'x'; 85]].concat()[..]
        );
    }

    #[test]
    fn xattrs_are_pax_records_sorted_with_the_others() {
        let mut h = reg(b"f");
        h.uid = 3_000_000;
        h.xattrs = vec![
            (b"user.z".to_vec(), b"1".to_vec()),
            (b"security.ima".to_vec(), vec![0, 1]),
            (b"user.a".to_vec(), Vec::new()),
        ];
        let mut out = Vec::new();
        encode_header(&h, &mut out).unwrap();
        let data = [
            format_pax_record(b"SCHILY.xattr.security.ima", &[0, 1]),
            format_pax_record(b"SCHILY.xattr.user.a", b""),
            format_pax_record(b"SCHILY.xattr.user.z", b"1"),
            format_pax_record(b"uid", b"3000000"),
        ]
        .concat();
        assert_eq!(&out[512..512 + data.len()], &data[..]);
        h.xattrs = vec![(b"user.a=b".to_vec(), Vec::new())];
        let err = encode_header(&h, &mut Vec::new()).unwrap_err().to_string();
        assert!(err.contains("\"user.a=b\" of f"), "{err}");
    }

    #[test]
    fn truncated_name_with_slash_at_field_end_is_cut_before_slashes() {
        let name = [vec![b'a'; 97], b"///".to_vec(), vec![b'b'; 10]].concat();
        let mut field = [0xffu8; 100];
        format_string(&mut field, &name);
        assert_eq!(
            field[97], 0,
            "the run of slashes ending the field becomes a NUL"
        );
        assert_eq!(&field[98..], b"//");
    }

    #[test]
    fn big_numbers_go_to_pax_and_fields_become_zero() {
        let mut h = reg(b"big");
        h.uid = 1 << 21;
        h.gid = (1 << 21) - 1;
        h.size = 1 << 33;
        h.mtime = 8i64.pow(11);
        let mut out = Vec::new();
        encode_header(&h, &mut out).unwrap();
        let data = [
            format_pax_record(b"mtime", b"8589934592"),
            format_pax_record(b"size", b"8589934592"),
            format_pax_record(b"uid", b"2097152"),
        ]
        .concat();
        assert_eq!(&out[512..512 + data.len()], &data[..]);
        let main = &out[1024..];
        assert_eq!(field(main, 108, 8), b"0000000\0");
        assert_eq!(field(main, 116, 8), b"7777777\0");
        assert_eq!(field(main, 124, 12), b"00000000000\0");
        assert_eq!(field(main, 136, 12), b"00000000000\0");
        let mut h = reg(b"neg");
        h.mtime = -5;
        let mut out = Vec::new();
        encode_header(&h, &mut out).unwrap();
        assert_eq!(&out[512..522], b"12 mtime=-");
        // Go's zero time (year 1) is "no time": written as 0 without PAX.
        h.mtime = GO_ZERO_TIME_UNIX;
        let mut out = Vec::new();
        encode_header(&h, &mut out).unwrap();
        assert_eq!(out.len(), 512);
        assert_eq!(field(&out, 136, 12), b"00000000000\0");
    }

    #[test]
    fn non_ascii_linkname_goes_to_pax() {
        let mut h = reg(b"l");
        h.typeflag = TYPE_SYMLINK;
        h.size = 0;
        h.linkname = "t\u{fc}r".as_bytes().to_vec();
        let mut out = Vec::new();
        encode_header(&h, &mut out).unwrap();
        let rec = format_pax_record(b"linkpath", &h.linkname);
        assert_eq!(&out[512..512 + rec.len()], &rec[..]);
        assert_eq!(field(&out[1024..], 157, 3), b"tr\0");
        assert_eq!(field(&out, 0, 15), b"PaxHeaders.0/l\0");
    }
}
