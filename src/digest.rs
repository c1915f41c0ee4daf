//! sha256 and byte counts computed while a stream passes through.

use std::io::{self, Write};

use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// An OCI digest string, `sha256:<64 hex>`.
pub(crate) fn format_sha256(hash: &[u8]) -> String {
    let mut s = String::with_capacity(7 + 64);
    s.push_str("sha256:");
    for b in hash {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Check that `s` is a digest [`format_sha256`] could produce (`sha256:` and 64 lowercase hex
/// digits): the only kind of diffID an apply can verify.
pub fn validate_sha256(s: &str) -> Result<()> {
    let hex = s.strip_prefix("sha256:").unwrap_or_default();
    if hex.len() != 64 || !hex.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(Error::InvalidArgument(format!(
            "diffID {s:?} is not of the form sha256:<64 lowercase hex digits>"
        )));
    }
    Ok(())
}

/// A writer that hashes and counts every byte it forwards to `inner`.
pub(crate) struct DigestWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> DigestWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        DigestWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// The digest and size of everything written, and the inner writer.
    pub(crate) fn finish(self) -> (String, u64, W) {
        (
            format_sha256(&self.hasher.finalize()),
            self.count,
            self.inner,
        )
    }
}

impl<W: Write> Write for DigestWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_layer_digest_matches_containerd() {
        // The empty diff is two zero blocks; containerd's well-known empty-layer diffID.
        let mut w = DigestWriter::new(Vec::new());
        w.write_all(&[0u8; 1024]).unwrap();
        let (d, n, _) = w.finish();
        assert_eq!(n, 1024);
        assert_eq!(
            d,
            "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"
        );
    }
}
