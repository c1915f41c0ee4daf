package layerdiff

import (
	"archive/tar"
	"bytes"
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/pkg/archive"
	"github.com/containerd/errdefs"

	"github.com/layerdiff/layerdiff/go/internal/testkit"
	"github.com/layerdiff/layerdiff/go/internal/treecmp"
)

// TestAufsDirs: the br: option parsed as containerd 1.x's getAufsPath did, every error case
// InvalidArgument with its message.
func TestAufsDirs(t *testing.T) {
	for _, c := range []struct {
		name    string
		options []string
		rw      string
		ro      []string
		err     string // "" = no error
	}{
		{"containerd's case", []string{"random:option", "br:/test/rw=rw:/test/ro=ro+wh"}, "/test/rw", []string{"/test/ro"}, ""},
		{"rw only", []string{"br:/rw=rw"}, "/rw", nil, ""},
		{"ro branches top first", []string{"br:/rw=rw:/a=ro+wh:/b=ro+wh:/c=ro+wh"}, "/rw", []string{"/a", "/b", "/c"}, ""},
		{"other options ignored", []string{"dio", "xino=/dev/shm/aufs.xino", "br:/rw=rw:/a=ro+wh", "dirperm1"}, "/rw", []string{"/a"}, ""},
		{"br: options add up", []string{"br:/rw=rw", "br:/a=ro+wh"}, "/rw", []string{"/a"}, ""},
		{"suffix only at the end", []string{"br:/x=rw/y=rw:/a=ro+wh/b=ro+wh"}, "/x=rw/y", []string{"/a=ro+wh/b"}, ""},
		{"no br option", []string{"random:option"}, "", nil, "rw branch not found"},
		{"no options", nil, "", nil, "rw branch not found"},
		{"br is not a prefix elsewhere", []string{"xbr:/rw=rw"}, "", nil, "rw branch not found"},
		{"empty rw dir", []string{"br:=rw"}, "", nil, "rw branch not found"},
		{"ro only", []string{"br:/test/ro=ro+wh"}, "", nil, "rw branch be first"},
		{"ro before rw", []string{"br:/a=ro+wh:/rw=rw"}, "", nil, "rw branch be first"},
		{"two rw branches", []string{"br:/rw=rw:/rw2=rw"}, "", nil, "multiple rw branch found"},
		{"two rw branches in two options", []string{"br:/rw=rw", "br:/rw2=rw"}, "", nil, "multiple rw branch found"},
		{"plain ro suffix", []string{"br:/rw=rw:/a=ro"}, "", nil, "unhandled aufs suffix"},
		{"rr suffix", []string{"br:/rw=rr"}, "", nil, "unhandled aufs suffix"},
		{"no suffix", []string{"br:/rw"}, "", nil, "unhandled aufs suffix"},
		{"empty br", []string{"br:"}, "", nil, "unhandled aufs suffix"},
		{"empty branch", []string{"br:/rw=rw::/a=ro+wh"}, "", nil, "unhandled aufs suffix"},
	} {
		t.Run(c.name, func(t *testing.T) {
			rw, ro, err := aufsDirs(c.options)
			if c.err != "" {
				if err == nil || !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("aufsDirs(%q) = %q, %q, %v; want an InvalidArgument %q", c.options, rw, ro, err, c.err)
				}
				return
			}
			if err != nil || rw != c.rw || !reflect.DeepEqual(ro, c.ro) {
				t.Fatalf("aufsDirs(%q) = %q, %q, %v; want %q, %q", c.options, rw, ro, err, c.rw, c.ro)
			}
		})
	}
}

// aufsMount is the record containerd's aufs snapshotter gave the applier; never mounted here
// (this kernel has no aufs), so an apply that tried to mount it fails.
func aufsMount(rw string, ro ...string) []mount.Mount {
	br := "br:" + rw + "=rw"
	for _, d := range ro {
		br += ":" + d + "=ro+wh"
	}
	return []mount.Mount{{Type: "aufs", Source: "none", Options: []string{"dio", br, "dirperm1"}}}
}

type tarEntry struct {
	hdr  tar.Header
	data string
}

func tarWith(t testing.TB, entries ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		h.Size = int64(len(e.data))
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(e.data)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestApplyAufsMount: Differ.Apply on a single aufs mount record applies into the rw branch,
// whiteouts and opaque markers written as the .wh. files they are, missing parents taking the
// ro branches' attributes (top first); what is in the rw branch already stays. The expected
// branch is containerd's archive.Apply with AufsConvertWhiteout (whose whole body is
// `return true, nil`) and the ro branches as parents, as containerd 1.x's applier ran it.
func TestApplyAufsMount(t *testing.T) {
	testkit.RequireRoot(t, needsRoot)
	top, bottom := t.TempDir(), t.TempDir()
	tb := treeWriter{t, bottom}
	tb.dir("a/b", 0o750)
	tb.chown("a/b", 13, 14)
	tb.xattr("a/b", "user.origin", []byte("bottom"))
	tb.times("a/b", fixedTime(5, 0))
	tt := treeWriter{t, top}
	tt.dir("a", 0o711) // the top ro branch wins for "a"
	tt.chown("a", 21, 22)
	tt.times("a", fixedTime(7, 0))

	layerTar := tarWith(t,
		tarEntry{hdr: tar.Header{Name: "a/b/c/file", Typeflag: tar.TypeReg, Mode: 0o640, Uid: 1, Gid: 2, ModTime: fixedTime(8, 0)}, data: "content"},
		tarEntry{hdr: tar.Header{Name: "o/.wh..wh..opq", Typeflag: tar.TypeReg, Mode: 0o600, ModTime: fixedTime(9, 0)}},
		tarEntry{hdr: tar.Header{Name: "o/new", Typeflag: tar.TypeReg, Mode: 0o600, ModTime: fixedTime(9, 0)}, data: "new"},
		tarEntry{hdr: tar.Header{Name: ".wh.gone", Typeflag: tar.TypeReg, Mode: 0o444, Uid: 3, Gid: 4, ModTime: fixedTime(10, 0)}},
		tarEntry{hdr: tar.Header{Name: "o/.wh.old", Typeflag: tar.TypeReg, ModTime: fixedTime(11, 0)}},
	)
	ctx, cs := testkit.ContentStore(t)
	layer := writeBlob(t, ctx, cs, "application/vnd.oci.image.layer.v1.tar", layerTar)
	var rws [2]string
	for i := range rws {
		rws[i] = t.TempDir()
		w := treeWriter{t, rws[i]}
		w.file("gone", []byte("in the rw branch before"), 0o644)
		w.file("o/old", []byte("in the rw branch before"), 0o644)
		testkit.Settle(t, rws[i])
	}

	got, err := NewDiffer(cs).Apply(ctx, layer, aufsMount(rws[0], top, bottom))
	if err != nil {
		t.Fatalf("layerdiff Apply: %v", err)
	}
	if got.Digest != layer.Digest || got.Size != layer.Size {
		t.Errorf("descriptor %s/%d, want the layer's own %s/%d", got.Digest, got.Size, layer.Digest, layer.Size)
	}
	aufs := func(*tar.Header, string) (bool, error) { return true, nil }
	if _, err := archive.Apply(ctx, rws[1], bytes.NewReader(layerTar),
		archive.WithConvertWhiteout(aufs), archive.WithParents([]string{top, bottom})); err != nil {
		t.Fatalf("containerd archive.Apply: %v", err)
	}
	requireSameTreeButDirTimes(t, rws[1], rws[0])

	snap, err := treecmp.Snapshot(rws[0])
	if err != nil {
		t.Fatal(err)
	}
	names := snap.Order
	want := []string{".", ".wh.gone", "a", "a/b", "a/b/c", "a/b/c/file", "gone", "o", "o/.wh..wh..opq", "o/.wh.old", "o/new", "o/old"}
	if !reflect.DeepEqual(names, want) {
		t.Errorf("rw branch holds %q, want %q", names, want)
	}
	if e := snap.Entries[".wh.gone"]; e == nil || !e.Type.IsRegular() || e.Perm != 0o444 || e.UID != 3 || e.Size != 0 {
		t.Errorf(".wh.gone: %+v, want the layer's empty 0444 file owned by 3", e)
	}
	if a := snap.Entries["a"]; a == nil || a.UID != 21 || a.Perm != 0o711 {
		t.Errorf("a: %+v, want the top ro branch's owner 21 and mode 0711", a)
	}
	if b := snap.Entries["a/b"]; b == nil || b.UID != 13 || b.Perm != 0o750 || b.Xattrs["user.origin"] != "bottom" {
		t.Errorf("a/b: %+v, want the bottom ro branch's owner 13, mode 0750 and xattr", b)
	}
}

// TestApplyAufsMountUnparsable: an aufs record whose br: option containerd 1.x could not parse
// takes the temporary-mount path, as there. Its branches do not exist, so that mount fails on
// any kernel, aufs or not; and the applier must not have made them.
func TestApplyAufsMountUnparsable(t *testing.T) {
	testkit.RequireRoot(t, needsRoot)
	dir := t.TempDir()
	rw, ro := filepath.Join(dir, "rw"), filepath.Join(dir, "ro")
	ctx, cs := testkit.ContentStore(t)
	layer := writeBlob(t, ctx, cs, "application/vnd.oci.image.layer.v1.tar",
		tarWith(t, tarEntry{hdr: tar.Header{Name: "file", Typeflag: tar.TypeReg, Mode: 0o644}, data: "x"}))
	mounts := []mount.Mount{{Type: "aufs", Source: "none", Options: []string{"br:" + ro + "=ro+wh:" + rw + "=rw"}}}
	_, err := NewDiffer(cs).Apply(ctx, layer, mounts)
	if err == nil {
		t.Fatal("Apply onto an unparsable aufs record succeeded; want the temporary mount to fail")
	}
	if errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("error %v is the parse error; want the failed temporary mount", err)
	}
	if names, _ := filepath.Glob(filepath.Join(dir, "*")); len(names) > 0 {
		t.Errorf("the applier wrote %q", names)
	}
}
