//! Compressed layers and their digests, made with flate2, zstd and sha2 directly rather than
//! through layerdiff, so that the tests check layerdiff against encoders that are not its own.

use std::io::{Read, Write};

use sha2::Digest;

pub fn gzip(data: &[u8], level: u32) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

/// The first gzip member only (as a decoder that stops there reads it).
pub fn gunzip_first_member(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .unwrap();
    out
}

pub fn zstd(data: &[u8], level: i32) -> Vec<u8> {
    zstd::encode_all(data, level).unwrap()
}

pub fn unzstd(data: &[u8]) -> Vec<u8> {
    zstd::decode_all(data).unwrap()
}

/// An OCI digest: `sha256:<hex>`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{:x}", sha2::Sha256::digest(data))
}
