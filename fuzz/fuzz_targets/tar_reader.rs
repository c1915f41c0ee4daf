//! The layer reader as apply uses it (compression detected, gzip/zstd decoded, then our
//! Go-compatible tar reader, every entry's data read through it, sparse maps expanded) must
//! never panic, hang or grow without bound on any input, and must keep its own invariants:
//! an entry's data is exactly its size, and after an error or the end it yields nothing more.
//! Parity with Go's archive/tar is checked by the Go target FuzzTarHeaders.
#![no_main]

use std::io::{BufReader, Read};

use layerdiff::fuzzing::{decompress, TarReader};
use libfuzzer_sys::fuzz_target;

/// Decompressed bytes one input may expand to, and logical bytes (sparse holes included) it
/// may read: bombs are bounded, not explored.
const MAX_TAR: u64 = 64 << 20;
const MAX_LOGICAL: u64 = 64 << 20;

/// Go's `isHeaderOnlyType`: these entries have no data, whatever their size field says.
fn header_only(typeflag: u8) -> bool {
    matches!(typeflag, b'1'..=b'6')
}

fuzz_target!(|data: &[u8]| {
    let Ok(decoded) = decompress(data) else {
        return;
    };
    let mut tr = TarReader::new(BufReader::new(decoded.take(MAX_TAR)));
    let mut logical = 0u64;
    while let Ok(Some(hdr)) = tr.next_entry() {
        let mut read = 0u64;
        loop {
            if logical > MAX_LOGICAL {
                return;
            }
            match tr.read_chunk(|_| Ok(())) {
                Ok(0) => break,
                Ok(n) => {
                    read += n as u64;
                    logical += n as u64;
                }
                // The entry's data is cut short or inconsistent: the layer fails here.
                Err(_) => return,
            }
        }
        // Go's rule, not the reader's own bookkeeping: an entry's data is its size (sparse
        // entries: the logical size, holes included), none for header-only types.
        let expect = if header_only(hdr.typeflag) {
            0
        } else {
            hdr.size as u64
        };
        assert_eq!(
            read,
            expect,
            "entry {:?} (type {:?}): read {read} bytes, header size {}",
            String::from_utf8_lossy(&hdr.name),
            hdr.typeflag as char,
            hdr.size
        );
    }
    // After the end or an error, nothing more.
    assert!(matches!(tr.next_entry(), Ok(None)));
});
