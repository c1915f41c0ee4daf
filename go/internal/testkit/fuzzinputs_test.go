package testkit

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"strings"
	"testing"
)

func TestGzipHeaderString(t *testing.T) {
	for _, c := range []struct {
		name, comment string
		want          int
	}{{"", "", 0}, {"n", "", 1}, {strings.Repeat("n", 600), "c", 600}, {"n", strings.Repeat("c", 512), 512}} {
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		zw.Name, zw.Comment = c.name, c.comment
		zw.Write([]byte("data"))
		zw.Close()
		if got := GzipHeaderString(b.Bytes()); got != c.want {
			t.Errorf("name %d bytes, comment %d bytes: got %d, want %d", len(c.name), len(c.comment), got, c.want)
		}
	}
	if got := GzipHeaderString([]byte("not gzip at all")); got != 0 {
		t.Errorf("not gzip: got %d", got)
	}
}

func TestZstdWindow(t *testing.T) {
	frame := func(fhd byte, rest ...byte) []byte {
		return append([]byte{0x28, 0xb5, 0x2f, 0xfd, fhd}, append(rest, 0, 0, 0, 0)...)
	}
	for _, c := range []struct {
		b    []byte
		want uint64
	}{
		{frame(0x04, 0x90), 256 << 20},            // window descriptor 2^28
		{frame(0x04, 0x98), 512 << 20},            // 2^29
		{frame(0x04, 0x91), 256<<20 + 32<<20},     // mantissa 1: +1/8
		{frame(0x20|0x40, 0x00, 0x01), 256 + 256}, // single segment, 2-byte content size
		{append([]byte{0x50, 0x2a, 0x4d, 0x18, 1, 0, 0, 0, 'x'}, frame(0x04, 0x90)...), 256 << 20},
		{[]byte("plain tar bytes"), 0},
	} {
		if got := ZstdWindow(c.b); got != c.want {
			t.Errorf("%x: got %d, want %d", c.b, got, c.want)
		}
	}
}

func TestStarBadCtime(t *testing.T) {
	star := func(ctime string) []byte {
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "f", Mode: 0o644, Format: tar.FormatUSTAR})
		tw.Close()
		blk := b.Bytes()[:512]
		copy(blk[488:500], ctime)
		copy(blk[508:512], "tar\x00")
		SetTarChecksum(blk)
		return b.Bytes()
	}
	if !StarBadCtime(star("9999999999x\x00")) {
		t.Error("a STAR header with ctime 9999999999x: not recognised")
	}
	if StarBadCtime(star("00000000000\x00")) {
		t.Error("a STAR header with a valid ctime: recognised as bad")
	}
	bad := star("9999999999x\x00")
	bad[0] ^= 1 // checksum no longer matches: not a header
	if StarBadCtime(bad) {
		t.Error("a block with a wrong checksum: recognised as a STAR header")
	}
}
