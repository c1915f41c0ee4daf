package layerdiff

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/containerd/v2/core/mount"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"

	"github.com/layerdiff/layerdiff/go/internal/testkit"
)

// rootlessLayer: an opaque directory d and a whiteout of a.
func rootlessLayer(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range []*tar.Header{
		{Typeflag: tar.TypeDir, Name: "d/", Mode: 0o755},
		{Typeflag: tar.TypeReg, Name: "d/.wh..wh..opq", Mode: 0o644},
		{Typeflag: tar.TypeReg, Name: ".wh.a", Mode: 0o644},
		{Typeflag: tar.TypeReg, Name: "d/new", Mode: 0o644},
	} {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func rootlessLower(t *testing.T) string {
	t.Helper()
	lower := t.TempDir()
	w := treeWriter{t: t, root: lower}
	w.file("a", []byte("a"), 0o644)
	w.dir("d", 0o755)
	w.file("d/old", []byte("old"), 0o644)
	return lower
}

func xattrValue(t *testing.T, path, name string) string {
	t.Helper()
	buf := make([]byte, 16)
	n, err := unix.Lgetxattr(path, name, buf)
	if err == unix.ENODATA {
		return "<none>"
	}
	if err != nil {
		t.Fatalf("getxattr %s %s: %v", path, name, err)
	}
	return string(buf[:n])
}

// TestApplyUserxattrOverlayMount: a single overlay mount with userxattr (a rootless
// snapshotter's) is applied into its upperdir with user.overlay.* forms, which that mount
// then honours.
func TestApplyUserxattrOverlayMount(t *testing.T) {
	testkit.RequireRoot(t, needsRoot)
	ctx, cs := testkit.ContentStore(t)
	desc := writeBlob(t, ctx, cs, ocispec.MediaTypeImageLayer, rootlessLayer(t))
	lower, upper := rootlessLower(t), t.TempDir()
	mounts := overlayMount(upper, t.TempDir(), lower)
	mounts[0].Options = append(mounts[0].Options, "userxattr")
	if _, err := NewDiffer(cs).Apply(ctx, desc, mounts); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if got := xattrValue(t, filepath.Join(upper, "d"), "user.overlay.opaque"); got != "y" {
		t.Errorf("user.overlay.opaque of d = %q, want y", got)
	}
	if got := xattrValue(t, filepath.Join(upper, "d"), "trusted.overlay.opaque"); got != "<none>" {
		t.Errorf("trusted.overlay.opaque of d = %q, want none", got)
	}
	err := mount.WithReadonlyTempMount(ctx, mounts, func(merged string) error {
		for _, gone := range []string{"a", "d/old"} {
			if _, err := os.Lstat(filepath.Join(merged, gone)); !os.IsNotExist(err) {
				t.Errorf("%s in the merged view: %v", gone, err)
			}
		}
		if _, err := os.Lstat(filepath.Join(merged, "d/new")); err != nil {
			t.Errorf("d/new: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestApplyForcedXattrWhiteouts: OverlayWhiteoutXattr and OverlayXattrsUser reach the core.
func TestApplyForcedXattrWhiteouts(t *testing.T) {
	testkit.RequireRoot(t, needsRoot)
	root := t.TempDir()
	_, err := Apply(t.Context(), root, bytes.NewReader(rootlessLayer(t)), ApplyOptions{
		Whiteouts:       WhiteoutsOverlay,
		OverlayXattrs:   OverlayXattrsUser,
		OverlayWhiteout: OverlayWhiteoutXattr,
	})
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(root, "a"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size != 0 {
		t.Fatalf("a is not an empty file: %+v %v", st, err)
	}
	if got := xattrValue(t, filepath.Join(root, "a"), "user.overlay.whiteout"); got == "<none>" {
		t.Error("a has no user.overlay.whiteout")
	}
	if got := xattrValue(t, root, "user.overlay.opaque"); got != "x" {
		t.Errorf("user.overlay.opaque of the root = %q, want x", got)
	}
}
