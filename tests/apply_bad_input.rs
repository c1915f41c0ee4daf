//! Hostile or broken layers: each a clear error, no panic, no hang, nothing outside the root.

mod common;

use std::fs;
use std::process::Command;

use common::compress::{gzip, zstd};
use common::require_root;
use common::sandbox::{apply_bytes, default_opts, Sandbox};
use common::tar::{fix_checksum, Header, Tar};
use layerdiff::ErrorKind;

fn expect_err(layer: &[u8], what: &str) -> layerdiff::Error {
    let sb = Sandbox::new();
    let err = apply_bytes(&sb.root(), layer, &default_opts()).expect_err(what);
    sb.assert_outside_untouched();
    let msg = err.chain_message();
    assert!(!msg.is_empty());
    eprintln!("{what}: {msg}");
    err
}

fn big_tar() -> Vec<u8> {
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    Tar::new().file("f", &data).file("g", &data).finish()
}

#[test]
fn truncated_gzip() {
    require_root!();
    let gz = gzip(&big_tar(), 6);
    let e = expect_err(&gz[..gz.len() / 2], "truncated gzip");
    assert_eq!(e.kind(), ErrorKind::InvalidArchive, "{e}");
}

#[test]
fn corrupt_gzip() {
    require_root!();
    let mut gz = gzip(&big_tar(), 6);
    let n = gz.len();
    for b in &mut gz[20..n - 20] {
        *b ^= 0x5a;
    }
    expect_err(&gz, "corrupt gzip");
}

#[test]
fn gzip_bad_crc() {
    require_root!();
    let mut gz = gzip(&big_tar(), 6);
    let n = gz.len();
    gz[n - 6] ^= 1;
    expect_err(&gz, "gzip crc");
}

#[test]
fn truncated_zstd() {
    require_root!();
    let z = zstd(&big_tar(), 3);
    let e = expect_err(&z[..z.len() / 2], "truncated zstd");
    assert_eq!(e.kind(), ErrorKind::InvalidArchive, "{e}");
}

#[test]
fn corrupt_zstd() {
    require_root!();
    let mut z = zstd(&big_tar(), 3);
    let n = z.len();
    for b in &mut z[12..n - 4] {
        *b = b.wrapping_mul(31).wrapping_add(7);
    }
    expect_err(&z, "corrupt zstd");
}

#[test]
fn bad_header_checksum() {
    require_root!();
    let mut t = Tar::new().file("f", b"abc").finish();
    t[148] = b'7';
    let e = expect_err(&t, "checksum");
    assert_eq!(e.kind(), ErrorKind::InvalidArchive);
}

#[test]
fn truncated_tar_inside_data_and_header() {
    require_root!();
    let t = Tar::new().file("f", &[1u8; 4000]).finish();
    assert_eq!(
        expect_err(&t[..512 + 1000], "data").kind(),
        ErrorKind::InvalidArchive
    );
    assert_eq!(
        expect_err(&t[..300], "header").kind(),
        ErrorKind::InvalidArchive
    );
}

#[test]
fn truncated_padding_is_a_clean_end_as_in_go() {
    require_root!();
    let sb = Sandbox::new();
    let t = Tar::new().file("f", b"abc").finish();
    apply_bytes(&sb.root(), &t[..512 + 100], &default_opts()).unwrap();
    assert_eq!(fs::read(sb.p("f")).unwrap(), b"abc");
}

#[test]
fn zero_block_then_header() {
    require_root!();
    let mut t = vec![0u8; 512];
    t.extend(Tar::new().file("f", b"abc").finish());
    assert_eq!(
        expect_err(&t, "zero then header").kind(),
        ErrorKind::InvalidArchive
    );
}

#[test]
fn pax_header_of_two_gib_is_rejected_without_allocating() {
    require_root!();
    let mut hd = Header::new(b'x', "PaxHeaders/x");
    hd.size = Some(2 << 30);
    let mut t = hd.block().to_vec();
    t.extend_from_slice(&[b'9'; 4096]);
    let e = expect_err(&t, "2 GiB pax");
    assert!(e.to_string().contains("too long"), "{e}");
}

#[test]
fn bad_pax_records() {
    require_root!();
    for rec in [
        &b"5 k=1\n"[..],
        b"x path=a\n",
        b"8 =abc\n",
        b"99 k=v\n",
        b"10 mtime=x\n",
        b"9 uid=z\n",
    ] {
        let t = Tar::new().raw(&{
            let mut hd = Header::new(b'x', "PaxHeaders/x");
            hd.size = Some(rec.len() as i64);
            let mut b = hd.block().to_vec();
            let mut data = rec.to_vec();
            data.resize(512, 0);
            b.extend(data);
            b
        });
        let layer = t.file("f", b"x").finish();
        assert_eq!(
            expect_err(&layer, "bad pax").kind(),
            ErrorKind::InvalidArchive
        );
    }
}

#[test]
fn device_numbers_out_of_range() {
    require_root!();
    // Base-256 device major of 2^33 (GNU encoding of a number octal cannot hold).
    let mut hd = Header::new(b'3', "dev");
    hd.devmajor = 0;
    let mut blk = hd.block();
    blk[329..337].copy_from_slice(&[0x80, 0, 0, 0x02, 0, 0, 0, 0]);
    fix_checksum(&mut blk);
    let mut t = blk.to_vec();
    t.extend_from_slice(&[0u8; 1024]);
    let e = expect_err(&t, "device range");
    assert_eq!(e.kind(), ErrorKind::InvalidArchive);
    assert!(e.to_string().contains("out of range"), "{e}");
}

#[test]
fn invalid_whiteout_names() {
    require_root!();
    for name in [".wh.", ".wh..", ".wh...", "a/.wh..", "a/b/.wh..."] {
        let e = expect_err(&Tar::new().file(name, b"").finish(), name);
        assert_eq!(e.kind(), ErrorKind::InvalidArchive, "{name}: {e}");
    }
}

#[test]
fn unknown_entry_type() {
    require_root!();
    let e = expect_err(
        &Tar::new().entry(Header::new(b'Z', "weird"), b"").finish(),
        "type Z",
    );
    assert!(e.to_string().contains("unhandled tar header type"), "{e}");
}

#[test]
fn bad_sparse_maps() {
    require_root!();
    // A 1.0 map that is missing from the data.
    let t = Tar::new()
        .pax(&[("GNU.sparse.major", b"1"), ("GNU.sparse.minor", b"0")])
        .file("s", b"")
        .finish();
    assert_eq!(
        expect_err(&t, "sparse 1.0 without map").kind(),
        ErrorKind::InvalidArchive
    );
    // A 0.1 map whose fragment lies past the end.
    let t = Tar::new()
        .pax(&[
            ("GNU.sparse.numblocks", b"1"),
            ("GNU.sparse.map", b"10,5"),
            ("GNU.sparse.size", b"12"),
        ])
        .file("s", b"abcde")
        .finish();
    assert_eq!(
        expect_err(&t, "sparse 0.1 past end").kind(),
        ErrorKind::InvalidArchive
    );
    // More data in the archive than the map references.
    let t = Tar::new()
        .pax(&[
            ("GNU.sparse.numblocks", b"1"),
            ("GNU.sparse.map", b"0,2"),
            ("GNU.sparse.size", b"8"),
        ])
        .file("s", b"abcde")
        .finish();
    assert_eq!(
        expect_err(&t, "sparse unreferenced data").kind(),
        ErrorKind::InvalidArchive
    );
}

#[test]
fn full_disk_is_a_clear_error() {
    require_root!();
    let sb = Sandbox::new();
    let mnt = sb.root();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success(), "mount tmpfs");
    let layer = Tar::new().file("big", &vec![3u8; 4 << 20]).finish();
    let res = apply_bytes(&mnt, &layer, &default_opts());
    let _ = Command::new("umount").arg(&mnt).status();
    let e = res.unwrap_err();
    assert_eq!(e.errno(), Some(libc_enospc()), "{e}");
    assert!(e.to_string().contains("write"), "{e}");
    sb.assert_outside_untouched();
}

fn libc_enospc() -> i32 {
    rustix::io::Errno::NOSPC.raw_os_error()
}

#[test]
fn root_that_is_not_a_directory() {
    require_root!();
    let sb = Sandbox::new();
    fs::write(sb.p("file"), "x").unwrap();
    let e = apply_bytes(&sb.p("file"), &Tar::new().finish()[..], &default_opts()).unwrap_err();
    assert!(e.to_string().contains("open root"), "{e}");
}

/// A STAR header (POSIX magic, `tar\0` trailer) whose ctime field does not parse is refused,
/// as Go's reader refuses it; with a valid ctime the same member applies.
#[test]
fn star_header_with_an_unparsable_ctime() {
    let star = |ctime: &[u8; 12]| {
        let mut blk = Header::new(b'0', "f").block();
        blk[488..500].copy_from_slice(ctime);
        blk[508..512].copy_from_slice(b"tar\0");
        fix_checksum(&mut blk);
        Tar::new().raw(&blk).finish()
    };
    let sb = Sandbox::new();
    apply_bytes(&sb.root(), &star(b"00000000017\0"), &default_opts())
        .expect("a STAR header with a valid ctime");
    assert!(sb.root().join("f").exists());
    let e = expect_err(&star(b"zz0000000017"), "unparsable STAR ctime");
    assert_eq!(e.kind(), ErrorKind::InvalidArchive);
}

/// A gzip member whose FNAME or FCOMMENT is longer than 511 bytes is refused, as Go's gzip
/// reader (containerd's built-in decoder) refuses it; 511 bytes apply.
#[test]
fn gzip_name_or_comment_over_511_bytes() {
    let tar = Tar::new().file("f", b"x").finish();
    let with = |flag: u8, len: usize| {
        // A header with FNAME (8) or FCOMMENT (16), then the deflate body and trailer of a
        // plain member.
        let plain = gzip(&tar, 6);
        let mut out = plain[..10].to_vec();
        out[3] = flag;
        out.extend_from_slice(&vec![b'n'; len]);
        out.push(0);
        out.extend_from_slice(&plain[10..]);
        out
    };
    for flag in [8u8, 16] {
        let sb = Sandbox::new();
        apply_bytes(&sb.root(), &with(flag, 511), &default_opts())
            .unwrap_or_else(|e| panic!("flag {flag}, 511 bytes: {e}"));
        let e = expect_err(&with(flag, 512), "gzip string of 512 bytes");
        assert!(e.chain_message().contains("gzip: invalid header"), "{e}");
    }
}
