package testkit

// Helpers for the differential fuzz targets (parity/hostile FuzzApply, parity/compare
// FuzzCompare, parity/tarread FuzzTarHeaders): writing seeds in Go's corpus format, and
// recognising the input properties behind known, still open differences (issue 10), so
// that each target's allowlist can match a finding narrowly.

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// WriteCorpusEntry writes one seed for a fuzz target, as `go test` reads testdata/fuzz/FuzzX/NAME:
// the values in the order of the fuzz function's arguments.
func WriteCorpusEntry(dir, name string, values ...any) error {
	var b bytes.Buffer
	b.WriteString("go test fuzz v1\n")
	for _, v := range values {
		switch v := v.(type) {
		case []byte:
			fmt.Fprintf(&b, "[]byte(%q)\n", v)
		case bool, int64, uint16, uint32:
			fmt.Fprintf(&b, "%T(%v)\n", v, v)
		case uint8:
			fmt.Fprintf(&b, "byte(%q)\n", v)
		default:
			return fmt.Errorf("corpus entry %s: unsupported type %T", name, v)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, name), b.Bytes(), 0o644)
}

// ZstdWindow is the window size the first zstd frame of b declares (skippable frames
// skipped; a single-segment frame's window is its content size), 0 when b is no zstd frame.
func ZstdWindow(b []byte) uint64 {
	for len(b) >= 8 {
		magic := binary.LittleEndian.Uint32(b)
		if magic&0xfffffff0 == 0x184d2a50 { // skippable frame
			n := uint64(binary.LittleEndian.Uint32(b[4:]))
			if n > uint64(len(b)-8) {
				return 0
			}
			b = b[8+n:]
			continue
		}
		if magic != 0xfd2fb528 {
			return 0
		}
		fhd := b[4]
		singleSegment := fhd&0x20 != 0
		rest := b[5:]
		if !singleSegment {
			wd := rest[0]
			log := 10 + uint(wd>>3)
			base := uint64(1) << log
			return base + base/8*uint64(wd&7)
		}
		rest = rest[min(len(rest), []int{0, 1, 2, 4}[fhd&3]):] // dictionary ID
		if len(rest) < []int{1, 2, 4, 8}[fhd>>6] {
			return 0
		}
		switch fhd >> 6 {
		case 0:
			return uint64(rest[0])
		case 1:
			return uint64(binary.LittleEndian.Uint16(rest)) + 256
		case 2:
			return uint64(binary.LittleEndian.Uint32(rest))
		default:
			return binary.LittleEndian.Uint64(rest)
		}
	}
	return 0
}

// GzipHeaderString is the length of the longer of the file name and comment (FNAME,
// FCOMMENT, NUL excluded; to the end of b if unterminated) in the header of b's first gzip
// member, 0 when b is no gzip stream. Go's compress/gzip refuses 512 and more.
func GzipHeaderString(b []byte) int {
	if len(b) < 10 || b[0] != 0x1f || b[1] != 0x8b || b[2] != 8 {
		return 0
	}
	flg, rest := b[3], b[10:]
	if flg&0x04 != 0 { // FEXTRA
		if len(rest) < 2 {
			return 0
		}
		n := int(binary.LittleEndian.Uint16(rest))
		if n > len(rest)-2 {
			return 0
		}
		rest = rest[2+n:]
	}
	longest := 0
	for _, bit := range []byte{0x08, 0x10} { // FNAME, FCOMMENT
		if flg&bit == 0 {
			continue
		}
		n := bytes.IndexByte(rest, 0)
		if n < 0 {
			return max(longest, len(rest))
		}
		longest = max(longest, n)
		rest = rest[n+1:]
	}
	return longest
}

// StarBadCtime reports whether some 512-byte-aligned block of the tar stream b is a STAR
// header (valid checksum, "ustar\0" magic, "tar\0" trailer) whose ctime field Go's
// archive/tar cannot parse (it then fails with ErrHeader).
func StarBadCtime(b []byte) bool {
	for off := 0; off+512 <= len(b); off += 512 {
		blk := b[off : off+512]
		if !bytes.Equal(blk[257:263], []byte("ustar\x00")) || !bytes.Equal(blk[508:512], []byte("tar\x00")) {
			continue
		}
		if !validChecksum(blk) {
			continue
		}
		if !parsesAsNumeric(blk[488:500]) {
			return true
		}
	}
	return false
}

// SetTarChecksum writes the checksum of a patched tar header block (the unsigned sum of its
// bytes, the field counted as spaces).
func SetTarChecksum(blk []byte) {
	copy(blk[148:156], "        ")
	var sum int64
	for _, c := range blk[:512] {
		sum += int64(c)
	}
	copy(blk[148:156], fmt.Sprintf("%06o\x00 ", sum))
}

// validChecksum: Go's tar checksum test (unsigned or signed sum with the field as spaces).
func validChecksum(blk []byte) bool {
	field := blk[148:156]
	if !parsesAsNumeric(field) || field[0]&0x80 != 0 {
		return false
	}
	want, _ := strconv.ParseUint(octalText(field), 8, 64)
	var unsigned, signed int64
	for i, c := range blk {
		if i >= 148 && i < 156 {
			c = ' '
		}
		unsigned += int64(c)
		signed += int64(int8(c))
	}
	return int64(want) == unsigned || int64(want) == signed
}

// parsesAsNumeric follows Go's tar parseNumeric: base-256 when the high bit is set (an
// error only on overflow), else octal after trimming spaces and NULs.
func parsesAsNumeric(b []byte) bool {
	if len(b) > 0 && b[0]&0x80 != 0 {
		var x uint64
		for i, c := range b {
			if b[0]&0x40 != 0 {
				c ^= 0xff
			}
			if i == 0 {
				c &= 0x7f
			}
			if x>>56 > 0 {
				return false
			}
			x = x<<8 | uint64(c)
		}
		return x>>63 == 0
	}
	s := octalText(b)
	if s == "" {
		return true
	}
	_, err := strconv.ParseUint(s, 8, 64)
	return err == nil
}

// octalText is Go's parseOctal's input: trimmed of spaces and NULs, cut at a NUL.
func octalText(b []byte) string {
	b = bytes.Trim(b, " \x00")
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}
