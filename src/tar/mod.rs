//! Tar, as Go's `archive/tar` reads and writes it (the package containerd's `pkg/archive`
//! uses on both sides), in one place:
//!
//! - [`encode`]: the header encoder compare writes with ([`HeaderToWrite`]);
//! - [`pax`]: PAX records, formatted and parsed;
//! - [`reader`]: the reader apply unpacks with ([`TarReader`] yielding an [`EntryHeader`]),
//!   with GNU/PAX sparse files in its `sparse` submodule.
//!
//! Headers are handled here rather than with the `tar` crate because what the diffID depends on
//! (Go's choice between USTAR and PAX, its PAX header naming, field padding and truncation) and
//! what apply must accept or reject (Go's leniencies and end-of-archive rules) differ from it.

pub(crate) mod encode;
pub(crate) mod pax;
pub(crate) mod reader;

pub(crate) use encode::{encode_header, HeaderToWrite};
pub(crate) use reader::{EntryHeader, Nanos, TarReader};

/// Size of a tar block: headers are one block, data is padded to whole blocks.
pub(crate) const BLOCK_SIZE: usize = 512;

// Typeflags (Go's `tar.Type*`).
/// Regular file.
pub(crate) const TYPE_REG: u8 = b'0';
/// Regular file, pre-POSIX (a NUL typeflag); a trailing `/` makes it a directory.
pub(crate) const TYPE_REGA: u8 = 0;
/// Hard link.
pub(crate) const TYPE_LINK: u8 = b'1';
pub(crate) const TYPE_SYMLINK: u8 = b'2';
pub(crate) const TYPE_CHAR: u8 = b'3';
pub(crate) const TYPE_BLOCK: u8 = b'4';
pub(crate) const TYPE_DIR: u8 = b'5';
pub(crate) const TYPE_FIFO: u8 = b'6';
/// PAX extended header for the next entry.
pub(crate) const TYPE_XHEADER: u8 = b'x';
/// PAX global header.
pub(crate) const TYPE_XGLOBAL: u8 = b'g';
pub(crate) const TYPE_GNU_LONGNAME: u8 = b'L';
pub(crate) const TYPE_GNU_LONGLINK: u8 = b'K';
/// Old GNU sparse file.
pub(crate) const TYPE_GNU_SPARSE: u8 = b'S';

/// A malformed or hostile archive.
fn bad(msg: impl Into<String>) -> crate::error::Error {
    crate::error::Error::InvalidArchive(msg.into())
}
