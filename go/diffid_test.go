package layerdiff

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	digest "github.com/opencontainers/go-digest"

	"github.com/layerdiff/layerdiff/go/internal/testkit"
)

// diffIDLayer is a small plain tar and its gzip form; its diffID is the tar's digest.
func diffIDLayer(t *testing.T) (plain, gzipped []byte) {
	plain = tarOf(t,
		&tar.Header{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755},
		&tar.Header{Name: "etc/hostname", Typeflag: tar.TypeReg, Mode: 0o644},
	)
	return plain, testkit.Gzip(t, plain)
}

// TestApplyExpectedDiffID: ApplyOptions.ExpectedDiffID reaches the core through the C ABI.
// The right diffID (that of the uncompressed stream, also for a gzip layer) passes.
func TestApplyExpectedDiffID(t *testing.T) {
	plain, gzipped := diffIDLayer(t)
	want := digest.FromBytes(plain)
	for name, layer := range map[string][]byte{"tar": plain, "gzip": gzipped} {
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			res, err := Apply(context.Background(), root, bytes.NewReader(layer), ApplyOptions{
				NoSameOwner:    true,
				ExpectedDiffID: want,
			})
			if err != nil {
				t.Fatalf("apply with the right diffID: %v", err)
			}
			if res.Digest != want {
				t.Errorf("applied %s, want %s", res.Digest, want)
			}
			if _, err := os.Stat(filepath.Join(root, "etc/hostname")); err != nil {
				t.Errorf("layer not applied: %v", err)
			}
		})
	}
}

// TestApplyWrongDiffID: another well-formed diffID fails with the core's one-line
// invalid-archive error naming both digests.
func TestApplyWrongDiffID(t *testing.T) {
	plain, gzipped := diffIDLayer(t)
	got := digest.FromBytes(plain)
	wrong := digest.FromBytes(append(plain, 0))
	root := t.TempDir()
	_, err := Apply(context.Background(), root, bytes.NewReader(gzipped), ApplyOptions{
		NoSameOwner:    true,
		ExpectedDiffID: wrong,
	})
	var coreErr *Error
	if !errors.As(err, &coreErr) || coreErr.Kind != KindInvalidArchive || !errors.Is(err, ErrInvalidArchive) {
		t.Fatalf("apply with a wrong diffID: %#v, want *Error of kind invalid archive", err)
	}
	wantMsg := "layer diffID is " + got.String() + ", not the expected " + wrong.String() + " (" + root + " may be partly written)"
	if !strings.HasSuffix(err.Error(), wantMsg) || strings.Contains(err.Error(), "\n") {
		t.Errorf("apply with a wrong diffID: %q, want one line ending in %q", err, wantMsg)
	}
}

// TestApplyMalformedDiffID: a malformed diffID is an invalid argument, refused before
// anything is written.
func TestApplyMalformedDiffID(t *testing.T) {
	plain, _ := diffIDLayer(t)
	good := digest.FromBytes(plain).String()
	for _, bad := range []string{
		"sha256:",
		strings.ToUpper(good),
		strings.Replace(good, "sha256:", "sha512:", 1),
		good[:len(good)-1],
		good + "0",
		good + "\x00", // C would see only the valid part before the NUL
	} {
		root := t.TempDir()
		_, err := Apply(context.Background(), root, bytes.NewReader(plain), ApplyOptions{
			NoSameOwner:    true,
			ExpectedDiffID: digest.Digest(bad),
		})
		var coreErr *Error
		if !errors.As(err, &coreErr) || coreErr.Kind != KindInvalidArgument || !errdefs.IsInvalidArgument(err) {
			t.Errorf("diffID %q: %#v, want *Error of kind invalid argument", bad, err)
			continue
		}
		if !strings.Contains(err.Error(), "is not of the form sha256:") {
			t.Errorf("diffID %q: %q does not say what is wrong", bad, err)
		}
		if entries, _ := os.ReadDir(root); len(entries) != 0 {
			t.Errorf("diffID %q: the refused apply wrote %d entries", bad, len(entries))
		}
	}
}
