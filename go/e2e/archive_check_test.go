package e2e

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"testing"

	digest "github.com/opencontainers/go-digest"
)

// TestBadArchiveBlob: the export check finds a blob whose data is not its digest's (the
// empty config of a truncated export) and passes a good archive.
func TestBadArchiveBlob(t *testing.T) {
	config := []byte(`{"architecture":"amd64","os":"linux"}`)
	write := func(data []byte) string {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		name := "blobs/sha256/" + digest.FromBytes(config).Encoded()
		if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o444, Size: int64(len(data))}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(t.TempDir(), "image.tar")
		if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if err := badArchiveBlob(write(config)); err != nil {
		t.Errorf("good archive: %v", err)
	}
	if err := badArchiveBlob(write(nil)); err == nil {
		t.Error("an empty config blob passed")
	}
	truncated := write(config)
	b, _ := os.ReadFile(truncated)
	if err := os.WriteFile(truncated, b[:520], 0o644); err != nil {
		t.Fatal(err)
	}
	if err := badArchiveBlob(truncated); err == nil {
		t.Error("a truncated archive passed")
	}
}
