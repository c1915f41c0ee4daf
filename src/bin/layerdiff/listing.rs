//! `layerdiff ls`: a layer's entries as the applier reads them, as `tar tv`-like text or as
//! one JSON object per line.

use std::fs::File;
use std::io::{self, BufWriter, Write};

use base64::Engine as _;
use layerdiff::{xattr_names, EntryHeader as Header, Nanos, Whiteout};

use crate::report::{self, Failure};

pub const LONG_ABOUT: &str = "\
List the entries of LAYER (tar, gzip or zstd; `-` for stdin) as apply reads them: PAX and GNU \
long-name headers are merged into the entry they describe, global PAX headers are listed as \
entries of type `g`, and bad input fails with the error apply would give.

Text: one line per entry, `tar tv` style: type and mode, uid/gid, size (major,minor for \
devices), mtime in UTC, name (with `-> target` for symlinks, `link to target` for hardlinks), \
then [whiteout] or [opaque whiteout], and [xattrs: names]. Control characters, backslashes \
and bytes that are not UTF-8 in names are escaped (\\n, \\\\, \\xHH).

--json: one object per line with type (file, dir, symlink, hardlink, char, block, fifo, \
contiguous, global, gnu-sparse or other), typeflag (the header's type byte as a \
one-character string), name, size, mode, uid, gid, mtime and, when present, atime (seconds \
since 1970 as a decimal string, with nine digits of fraction when not whole), link, devmajor \
and devminor (char and block devices), xattrs (names), whiteout (remove or opaque). A name, \
link or xattr name that is not UTF-8 is given lossily in its field and exactly, in base64, \
in nameBase64, linkBase64 or xattrsBase64.";

/// List `input` to stdout.
pub fn run(input: File, json: bool) -> Result<(), Failure> {
    let mut out = BufWriter::with_capacity(64 * 1024, io::stdout().lock());
    let mut write_failed = None;
    let listed = layerdiff::list(input, |h| {
        let line = if json { json_line(h) } else { text_line(h) };
        writeln!(out, "{line}").map_err(|e| {
            let err = layerdiff::Error::io("write to stdout", e);
            write_failed = Some(err.to_string());
            err
        })
    });
    if let Some(msg) = write_failed {
        return Err(Failure::Failed(msg));
    }
    listed.map_err(|e| e.chain_message())?;
    out.flush().map_err(report::stdout_failure)
}

/// The type's name in `--json`.
fn type_name(typeflag: u8) -> &'static str {
    match typeflag {
        b'0' => "file",
        b'1' => "hardlink",
        b'2' => "symlink",
        b'3' => "char",
        b'4' => "block",
        b'5' => "dir",
        b'6' => "fifo",
        b'7' => "contiguous",
        b'g' => "global",
        b'S' => "gnu-sparse",
        _ => "other",
    }
}

/// The first column's letter, as `tar tv` and `ls -l` show it.
fn type_letter(typeflag: u8) -> char {
    match typeflag {
        b'0' | b'7' | b'S' => '-',
        b'1' => 'h',
        b'2' => 'l',
        b'3' => 'c',
        b'4' => 'b',
        b'5' => 'd',
        b'6' => 'p',
        b'g' => 'g',
        _ => '?',
    }
}

/// `rwxr-xr-x` with setuid, setgid and sticky shown as `ls -l` does.
fn permissions(mode: i64) -> String {
    let bit = |b: i64, c: char| if mode & b != 0 { c } else { '-' };
    let special = |x: i64, s: i64, lower: char, upper: char| match (mode & x != 0, mode & s != 0) {
        (true, true) => lower,
        (false, true) => upper,
        (true, false) => 'x',
        (false, false) => '-',
    };
    [
        bit(0o400, 'r'),
        bit(0o200, 'w'),
        special(0o100, 0o4000, 's', 'S'),
        bit(0o040, 'r'),
        bit(0o020, 'w'),
        special(0o010, 0o2000, 's', 'S'),
        bit(0o004, 'r'),
        bit(0o002, 'w'),
        special(0o001, 0o1000, 't', 'T'),
    ]
    .iter()
    .collect()
}

fn is_device(typeflag: u8) -> bool {
    matches!(typeflag, b'3' | b'4')
}

/// A time as seconds since 1970 in decimal, with nine digits of fraction unless whole (the
/// form of PAX time records): exact for every time a tar header can hold.
fn decimal_time(t: Nanos) -> String {
    let (secs, nanos) = (t.div_euclid(1_000_000_000), t.rem_euclid(1_000_000_000));
    if nanos == 0 {
        return secs.to_string();
    }
    // -1.5 s is "-1.500000000" (sign, then the distance from 0), as PAX writes it.
    let (sign, abs) = if t < 0 { ("-", -t) } else { ("", t) };
    format!("{sign}{}.{:09}", abs / 1_000_000_000, abs % 1_000_000_000)
}

/// A time as a UTC date for the text listing; raw seconds when out of the calendar's range.
fn date_time(t: Nanos) -> String {
    let secs = t.div_euclid(1_000_000_000);
    i64::try_from(secs)
        .ok()
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .map_or_else(
            || format!("@{secs}"),
            |ts| ts.strftime("%Y-%m-%d %H:%M:%S").to_string(),
        )
}

fn text_line(h: &Header) -> String {
    let mut line = format!(
        "{}{} {}/{} {:>10} {} {}",
        type_letter(h.typeflag),
        permissions(h.mode),
        h.uid,
        h.gid,
        if is_device(h.typeflag) {
            format!("{},{}", h.devmajor, h.devminor)
        } else {
            h.size.to_string()
        },
        date_time(h.mtime),
        report::escape(&h.name)
    );
    match h.typeflag {
        b'2' => line.push_str(&format!(" -> {}", report::escape(&h.linkname))),
        b'1' => line.push_str(&format!(" link to {}", report::escape(&h.linkname))),
        _ => {}
    }
    match Whiteout::of(h) {
        Some(Whiteout::Remove) => line.push_str(" [whiteout]"),
        Some(Whiteout::Opaque) => line.push_str(" [opaque whiteout]"),
        None => {}
    }
    let xattrs: Vec<String> = xattr_names(h).map(report::escape).collect();
    if !xattrs.is_empty() {
        line.push_str(&format!(" [xattrs: {}]", xattrs.join(", ")));
    }
    line
}

fn json_line(h: &Header) -> String {
    let mut o = serde_json::Map::new();
    let mut put = |k: &str, v: serde_json::Value| {
        o.insert(k.to_string(), v);
    };
    put("type", type_name(h.typeflag).into());
    put("typeflag", char::from(h.typeflag).to_string().into());
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    put("name", String::from_utf8_lossy(&h.name).into());
    if std::str::from_utf8(&h.name).is_err() {
        put("nameBase64", b64(&h.name).into());
    }
    put("size", h.size.into());
    put("mode", h.mode.into());
    put("uid", h.uid.into());
    put("gid", h.gid.into());
    put("mtime", decimal_time(h.mtime).into());
    if let Some(a) = h.atime {
        put("atime", decimal_time(a).into());
    }
    if !h.linkname.is_empty() {
        put("link", String::from_utf8_lossy(&h.linkname).into());
        if std::str::from_utf8(&h.linkname).is_err() {
            put("linkBase64", b64(&h.linkname).into());
        }
    }
    if is_device(h.typeflag) {
        put("devmajor", h.devmajor.into());
        put("devminor", h.devminor.into());
    }
    let xattrs: Vec<&[u8]> = xattr_names(h).collect();
    if !xattrs.is_empty() {
        let lossy: Vec<_> = xattrs.iter().map(|x| String::from_utf8_lossy(x)).collect();
        put("xattrs", lossy.into());
        if xattrs.iter().any(|x| std::str::from_utf8(x).is_err()) {
            let exact: Vec<_> = xattrs.iter().map(|x| b64(x)).collect();
            put("xattrsBase64", exact.into());
        }
    }
    match Whiteout::of(h) {
        Some(Whiteout::Remove) => put("whiteout", "remove".into()),
        Some(Whiteout::Opaque) => put("whiteout", "opaque".into()),
        None => {}
    }
    serde_json::Value::Object(o).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_exact_decimal_seconds() {
        assert_eq!(
            decimal_time(1_500_000_000_000_000_001),
            "1500000000.000000001"
        );
        assert_eq!(decimal_time(-1_500_000_000), "-1.500000000");
        assert_eq!(decimal_time(-100_000_000_000), "-100");
        assert_eq!(decimal_time(0), "0");
    }

    #[test]
    fn permissions_as_ls_shows_them() {
        assert_eq!(permissions(0o4755), "rwsr-xr-x");
        assert_eq!(permissions(0o2644), "rw-r-Sr--");
        assert_eq!(permissions(0o1777), "rwxrwxrwt");
        assert_eq!(permissions(0o1000), "--------T");
    }
}
