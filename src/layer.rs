//! The layer writer: turns changes into a tar stream byte-identical to containerd's
//! `archive.ChangeWriter` on top of Go's `archive/tar` writer (CONTAINERD.md §2).
//!
//! Headers are encoded here rather than with the `tar` crate because Go's choice between a
//! plain USTAR header and a PAX extended header, its PAX header naming, field padding and
//! truncation rules are what the diffID depends on, byte for byte.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::control::CancelToken;
use crate::error::{Error, Result};
use crate::walk::{self, ChangeKind};

pub(crate) const BLOCK_SIZE: usize = 512;

pub(crate) const TYPE_REG: u8 = b'0';
pub(crate) const TYPE_LINK: u8 = b'1';
pub(crate) const TYPE_SYMLINK: u8 = b'2';
pub(crate) const TYPE_CHAR: u8 = b'3';
pub(crate) const TYPE_BLOCK: u8 = b'4';
pub(crate) const TYPE_DIR: u8 = b'5';
pub(crate) const TYPE_FIFO: u8 = b'6';
pub(crate) const TYPE_XHEADER: u8 = b'x';

const NAME_SIZE: usize = 100;
const PREFIX_SIZE: usize = 155;
const PAX_CAPABILITY: &[u8] = b"SCHILY.xattr.security.capability";
const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// Go's zero `time.Time` (January 1, year 1, UTC) in Unix seconds: Go treats it as "no time"
/// and writes 0 instead.
const GO_ZERO_TIME_UNIX: i64 = -62_135_596_800;

/// The fields of a tar header that containerd's change writer sets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Header {
    pub name: Vec<u8>,
    pub linkname: Vec<u8>,
    pub typeflag: u8,
    pub mode: i64,
    pub uid: i64,
    pub gid: i64,
    pub size: i64,
    /// Whole seconds (already truncated).
    pub mtime: i64,
    pub devmajor: i64,
    pub devminor: i64,
    /// Bytes of the `security.capability` xattr, carried as a PAX record when non-empty.
    pub capability: Option<Vec<u8>>,
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

/// Go's `formatPAXRecord`: `"<len> <key>=<value>\n"` where len counts the whole record.
pub fn format_pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
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
fn template_v7_plus(h: &Header, name: &[u8], linkname: &[u8]) -> [u8; BLOCK_SIZE] {
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

/// PAX records as (key, value), sorted by key.
type PaxRecords = Vec<(&'static [u8], Vec<u8>)>;

/// The PAX records Go's `allowedFormats` would produce, and whether USTAR can encode `h`.
fn pax_records(h: &Header) -> Result<(PaxRecords, bool)> {
    let mut recs: PaxRecords = Vec::new();
    let mut ustar_ok = true;
    if !is_ascii(&h.name) || h.name.len() > NAME_SIZE {
        if split_ustar_path(&h.name).is_none() {
            ustar_ok = false;
        }
        recs.push((b"path", h.name.clone()));
    }
    if !is_ascii(&h.linkname) || h.linkname.len() > NAME_SIZE {
        ustar_ok = false;
        recs.push((b"linkpath", h.linkname.clone()));
    }
    for (key, value, width) in [
        (&b"uid"[..], h.uid, 8),
        (b"gid", h.gid, 8),
        (b"size", h.size, 12),
    ] {
        if !fits_in_octal(width, value) {
            ustar_ok = false;
            recs.push((key, value.to_string().into_bytes()));
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
        recs.push((b"mtime", h.mtime.to_string().into_bytes()));
    }
    if let Some(cap) = h.capability.as_ref().filter(|c| !c.is_empty()) {
        ustar_ok = false;
        recs.push((PAX_CAPABILITY, cap.clone()));
    }
    recs.sort_by(|a, b| a.0.cmp(b.0));
    Ok((recs, ustar_ok))
}

/// Encode `h` as Go's tar writer would (with `Format: FormatPAX` or unknown; the two agree for
/// the headers containerd writes): one USTAR block, or a PAX extended header (block + padded
/// records) followed by the main block. Appends to `out`.
pub fn encode_header(h: &Header, out: &mut Vec<u8>) -> Result<()> {
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

/// Where the change writer puts tar bytes; `write_data` carries file contents so that the sink
/// may count progress and check cancellation.
pub trait TarSink {
    fn write_tar(&mut self, bytes: &[u8]) -> Result<()>;

    /// Free room at the end of the sink's own buffer, so that file contents can be read
    /// straight into it (one copy fewer); empty when the sink has no such buffer.
    fn spare(&mut self) -> &mut [u8] {
        &mut []
    }

    /// Take `n` bytes just read into the start of [`TarSink::spare`] as written.
    fn commit_spare(&mut self, n: usize) -> Result<()> {
        debug_assert_eq!(n, 0, "a sink without spare room got bytes in it");
        Ok(())
    }
}

/// containerd's `ChangeWriter`: receives changes in walk order and writes the tar entries.
pub struct ChangeWriter<'a, S: TarSink> {
    sink: S,
    upper: PathBuf,
    source_date_epoch: Option<i64>,
    cancel: Option<&'a CancelToken>,
    inode_src: HashMap<u64, Vec<u8>>,
    inode_refs: HashMap<u64, Vec<Vec<u8>>>,
    added_dirs: HashSet<Vec<u8>>,
    header_buf: Vec<u8>,
    copy_buf: Vec<u8>,
}

impl<'a, S: TarSink> ChangeWriter<'a, S> {
    pub fn new(
        sink: S,
        upper: &Path,
        source_date_epoch: Option<i64>,
        cancel: Option<&'a CancelToken>,
    ) -> Self {
        ChangeWriter {
            sink,
            upper: upper.to_path_buf(),
            source_date_epoch,
            cancel,
            inode_src: HashMap::new(),
            inode_refs: HashMap::new(),
            added_dirs: HashSet::new(),
            header_buf: Vec::with_capacity(4 * BLOCK_SIZE),
            copy_buf: vec![0; 256 * 1024],
        }
    }

    /// Write the two zero blocks that end the archive and give back the sink.
    pub fn finish(mut self) -> Result<S> {
        self.sink.write_tar(&[0u8; 2 * BLOCK_SIZE])?;
        Ok(self.sink)
    }

    fn full_path(&self, rel: &[u8]) -> PathBuf {
        let rel = rel.strip_prefix(b"/").unwrap_or(rel);
        if rel.is_empty() {
            self.upper.clone()
        } else {
            self.upper.join(std::ffi::OsStr::from_bytes(rel))
        }
    }

    fn write_header(&mut self, h: &Header) -> Result<()> {
        self.header_buf.clear();
        encode_header(h, &mut self.header_buf)?;
        let buf = std::mem::take(&mut self.header_buf);
        let r = self.sink.write_tar(&buf);
        self.header_buf = buf;
        r
    }

    /// containerd's `HandleChange`. `path` is `/`-rooted for walk changes (relative for the
    /// parents `include_parents` adds, as in containerd); `meta` is the walk's lstat (absent
    /// for deletions).
    pub fn handle_change(
        &mut self,
        kind: ChangeKind,
        path: &[u8],
        meta: Option<&Metadata>,
    ) -> Result<()> {
        crate::control::check(self.cancel)?;
        let meta = match (kind, meta) {
            (ChangeKind::Delete, _) => return self.write_whiteout(path),
            (_, Some(m)) => m,
            (_, None) => return Err(Error::Internal("change without metadata".into())),
        };
        let ft = meta.file_type();
        if ft.is_socket() {
            return Ok(());
        }
        let source = self.full_path(path);
        let mut h = self.header_from_meta(&source, path, meta)?;

        let mut additional_links = Vec::new();
        if !ft.is_dir() && meta.nlink() > 1 {
            let inode = meta.ino();
            if let Some(src) = self.inode_src.get(&inode) {
                h.typeflag = TYPE_LINK;
                h.linkname = src.clone();
                h.size = 0;
            } else {
                if kind == ChangeKind::Unmodified {
                    self.inode_refs.entry(inode).or_default().push(h.name);
                    return Ok(());
                }
                self.inode_src.insert(inode, h.name.clone());
                additional_links = self.inode_refs.remove(&inode).unwrap_or_default();
            }
        } else if kind == ChangeKind::Unmodified {
            return Ok(());
        }

        h.capability = walk::capability(&source)?;
        self.include_parents(&h)?;
        self.write_header(&h)?;

        if h.typeflag == TYPE_REG && h.size > 0 {
            self.copy_file(&source, h.size as u64)?;
        }

        if !additional_links.is_empty() {
            let link_source = std::mem::take(&mut h.name);
            for extra in additional_links {
                h.name = extra;
                h.typeflag = TYPE_LINK;
                h.linkname = link_source.clone();
                h.size = 0;
                self.include_parents(&h)?;
                self.write_header(&h)?;
            }
        }
        Ok(())
    }

    fn write_whiteout(&mut self, path: &[u8]) -> Result<()> {
        let path = path.strip_prefix(b"/").unwrap_or(path);
        let (dir, base) = match path.iter().rposition(|&c| c == b'/') {
            Some(i) => (&path[..=i], &path[i + 1..]),
            None => (&b""[..], path),
        };
        let mut name = dir.to_vec();
        name.extend_from_slice(WHITEOUT_PREFIX);
        name.extend_from_slice(base);
        let h = Header {
            name,
            typeflag: TYPE_REG,
            ..Header::default()
        };
        self.include_parents(&h)?;
        self.write_header(&h)
    }

    /// `tarheader.FileInfoHeaderNoLookups` + the adjustments of `HandleChange`.
    fn header_from_meta(&self, source: &Path, path: &[u8], meta: &Metadata) -> Result<Header> {
        let ft = meta.file_type();
        let mut name = path.strip_prefix(b"/").unwrap_or(path).to_vec();
        let mut h = Header {
            mode: (meta.mode() & 0o7777) as i64,
            uid: meta.uid() as i64,
            gid: meta.gid() as i64,
            ..Header::default()
        };
        if ft.is_file() {
            h.typeflag = TYPE_REG;
            h.size = meta.size() as i64;
        } else if ft.is_dir() {
            h.typeflag = TYPE_DIR;
            if name.last() != Some(&b'/') {
                name.push(b'/');
            }
        } else if ft.is_symlink() {
            h.typeflag = TYPE_SYMLINK;
            h.linkname = fs::read_link(source)
                .map_err(|e| Error::path("readlink", source, e))?
                .into_os_string()
                .into_vec();
        } else if ft.is_char_device() {
            h.typeflag = TYPE_CHAR;
        } else if ft.is_block_device() {
            h.typeflag = TYPE_BLOCK;
        } else if ft.is_fifo() {
            h.typeflag = TYPE_FIFO;
        } else {
            return Err(Error::InvalidArgument(format!(
                "unknown file type of {}",
                source.display()
            )));
        }
        h.name = name;
        let mut mtime = meta.mtime();
        if let Some(epoch) = self.source_date_epoch {
            if mtime > epoch || (mtime == epoch && meta.mtime_nsec() > 0) {
                mtime = epoch;
            }
        }
        h.mtime = mtime;
        // containerd tests the file type bits as a bit mask, so directories and symlinks
        // (whose type bits overlap S_IFBLK/S_IFCHR) carry their rdev too.
        let mode = meta.mode();
        if mode & libc::S_IFBLK != 0 || mode & libc::S_IFCHR != 0 {
            let rdev = meta.rdev();
            h.devmajor = nix::sys::stat::major(rdev) as i64;
            h.devminor = nix::sys::stat::minor(rdev) as i64;
        }
        Ok(h)
    }

    /// containerd's `includeParents`: emit the parent directory (from upper) before `h` unless
    /// it is the root or already emitted.
    fn include_parents(&mut self, h: &Header) -> Result<()> {
        let trimmed_len = h.name.len() - h.name.iter().rev().take_while(|&&c| c == b'/').count();
        let name = h.name[..trimmed_len].to_vec();
        if let Some(i) = name.iter().rposition(|&c| c == b'/') {
            let parent = name[..i].to_vec();
            if !parent.is_empty() && !self.added_dirs.contains(&parent) {
                self.added_dirs.insert(parent.clone());
                let pname = self.full_path(&parent);
                let meta = fs::metadata(&pname).map_err(|e| Error::path("stat", &pname, e))?;
                self.handle_change(ChangeKind::Modify, &parent, Some(&meta))?;
            }
        }
        if h.typeflag == TYPE_DIR {
            self.added_dirs.insert(name);
        }
        Ok(())
    }

    /// Copy exactly `size` bytes of `source` into the tar, padded to a block; a file that
    /// grew or shrank since it was stat'ed is an error.
    fn copy_file(&mut self, source: &Path, size: u64) -> Result<()> {
        let mut file = File::open(source).map_err(|e| Error::path("open", source, e))?;
        let mut remaining = size;
        while remaining > 0 {
            crate::control::check(self.cancel)?;
            let spare = self.sink.spare();
            let n = if spare.is_empty() {
                let want = remaining.min(self.copy_buf.len() as u64) as usize;
                let n = read_some(&mut file, &mut self.copy_buf[..want], source)?;
                let buf = std::mem::take(&mut self.copy_buf);
                let r = self.sink.write_tar(&buf[..n]);
                self.copy_buf = buf;
                r?;
                n
            } else {
                let want = remaining.min(spare.len() as u64) as usize;
                let n = read_some(&mut file, &mut spare[..want], source)?;
                self.sink.commit_spare(n)?;
                n
            };
            remaining -= n as u64;
        }
        let mut probe = [0u8; 1];
        loop {
            match file.read(&mut probe) {
                Ok(0) => break,
                Ok(_) => return Err(changed_size(source)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::path("read", source, e)),
            }
        }
        let pad = (BLOCK_SIZE - (size % BLOCK_SIZE as u64) as usize) % BLOCK_SIZE;
        if pad > 0 {
            self.sink.write_tar(&[0u8; BLOCK_SIZE][..pad])?;
        }
        Ok(())
    }
}

/// One read of at least one byte from a file expected to hold more; EOF means it shrank.
fn read_some(file: &mut File, buf: &mut [u8], source: &Path) -> Result<usize> {
    loop {
        match file.read(buf) {
            Ok(0) => return Err(changed_size(source)),
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::path("read", source, e)),
        }
    }
}

fn changed_size(source: &Path) -> Error {
    Error::path(
        "copy",
        source,
        io::Error::new(
            io::ErrorKind::InvalidData,
            "file changed size while reading",
        ),
    )
}

/// A sink collecting everything in memory (tests, small diffs).
impl TarSink for Vec<u8> {
    fn write_tar(&mut self, bytes: &[u8]) -> Result<()> {
        self.extend_from_slice(bytes);
        Ok(())
    }
}

impl<W: Write> TarSink for &mut W {
    fn write_tar(&mut self, bytes: &[u8]) -> Result<()> {
        self.write_all(bytes)
            .map_err(|e| Error::io("write layer", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(blk: &[u8], off: usize, len: usize) -> &[u8] {
        &blk[off..off + len]
    }

    fn reg(name: &[u8]) -> Header {
        Header {
            name: name.to_vec(),
            typeflag: TYPE_REG,
            mode: 0o644,
            uid: 1000,
            gid: 1000,
            size: 5,
            mtime: 1_700_000_000,
            ..Header::default()
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
        let cap = format_pax_record(PAX_CAPABILITY, &[1, 0, 0, 2, 0]);
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
