package layerdiff

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/diff"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/plugins/diff/walking"
	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/layerdiff/layerdiff/go/internal/testkit"
)

// testMaps: host IDs past the 8-digit octal field, as subordinate ranges often are.
var testMaps = IDMaps{
	UIDs: []specs.LinuxIDMapping{{ContainerID: 0, HostID: 3_000_000, Size: 65536}},
	GIDs: []specs.LinuxIDMapping{{ContainerID: 0, HostID: 3_100_000, Size: 65536}},
}

const testUIDMap, testGIDMap = "0:3000000:65536", "0:3100000:65536"

// containerTree writes what a container adds to its upper, owners in container IDs put on
// disk through shift (the identity for the unshifted tree).
func containerTree(t *testing.T, root string, shift func(uid, gid int) (int, int)) {
	w := treeWriter{t, root}
	w.dir("etc", 0o755)
	w.file("etc/motd", []byte("hello\n"), 0o644)
	w.dir("home/app", 0o750)
	w.file("home/app/data", []byte("app data"), 0o600)
	w.hardlink("home/app/data-link", "home/app/data")
	w.symlink("home/app/current", "data")
	for name, id := range map[string][2]int{
		"etc": {0, 0}, "etc/motd": {0, 0}, "home": {0, 0}, "home/app": {1000, 1000},
		"home/app/data": {1000, 100}, "home/app/current": {1000, 1000},
	} {
		u, g := shift(id[0], id[1])
		w.chown(name, u, g)
	}
	for _, name := range []string{"etc/motd", "home/app/data", "home/app/current", "etc", "home/app", "home", "."} {
		w.times(name, fixedTime(1, 0))
	}
}

func identity(uid, gid int) (int, int) { return uid, gid }
func toHost(uid, gid int) (int, int)   { return uid + 3_000_000, gid + 3_100_000 }

func compareBytes(t *testing.T, lower, upper string, opts CompareOptions) []byte {
	t.Helper()
	opts.Compression = CompressionNone
	var buf bytes.Buffer
	if _, err := Compare(context.Background(), lower, upper, &buf, opts); err != nil {
		t.Fatalf("Compare: %v", err)
	}
	return buf.Bytes()
}

func TestCompareApplyWithIDMaps(t *testing.T) {
	testkit.RequireRoot(t, needsRoot)
	empty, plain, shifted, applied := t.TempDir(), t.TempDir(), t.TempDir(), t.TempDir()
	containerTree(t, plain, identity)
	containerTree(t, shifted, toHost)
	want := compareBytes(t, empty, plain, CompareOptions{})
	if got := compareBytes(t, empty, shifted, CompareOptions{IDMaps: testMaps}); !bytes.Equal(got, want) {
		t.Fatal("the shifted tree diffed through the maps is not the unshifted tree's layer")
	}
	if got := compareBytes(t, empty, shifted, CompareOptions{}); bytes.Equal(got, want) {
		t.Fatal("without maps the shifted tree must give another layer")
	}
	if _, err := Apply(context.Background(), applied, bytes.NewReader(want), ApplyOptions{IDMaps: testMaps}); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(applied, "home/app/data"), &st); err != nil || st.Uid != 3_001_000 || st.Gid != 3_100_100 {
		t.Fatalf("applied owner %d:%d (%v), want 3001000:3100100", st.Uid, st.Gid, err)
	}
	if got := compareBytes(t, empty, applied, CompareOptions{IDMaps: testMaps}); !bytes.Equal(got, want) {
		t.Fatal("apply then diff through the same maps changed the layer")
	}

	// Outside the map: an error naming the ID and the path, or the substitute.
	w := treeWriter{t, shifted}
	w.file("stray", []byte("x"), 0o644)
	w.chown("stray", 5, 3_100_000)
	var buf bytes.Buffer
	_, err := Compare(context.Background(), empty, shifted, &buf, CompareOptions{IDMaps: testMaps})
	if err == nil || !strings.Contains(err.Error(), "uid 5 of ") || !strings.Contains(err.Error(), "stray") {
		t.Fatalf("want an error naming uid 5 and the path, got %v", err)
	}
	overflow := uint32(65534)
	sub := testMaps
	sub.UnmappedID = &overflow
	layer := compareBytes(t, empty, shifted, CompareOptions{IDMaps: sub})
	if hdr := tarHeader(t, layer, "stray"); hdr.Uid != 65534 || hdr.Gid != 0 {
		t.Fatalf("stray owner %d:%d, want 65534:0", hdr.Uid, hdr.Gid)
	}
}

func tarHeader(t *testing.T, layer []byte, name string) *tar.Header {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(layer))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			t.Fatalf("%s not in the layer", name)
		}
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Name == name {
			return hdr
		}
	}
}

func TestCompareAllXattrs(t *testing.T) {
	testkit.RequireRoot(t, needsRoot)
	empty, upper, applied := t.TempDir(), t.TempDir(), t.TempDir()
	w := treeWriter{t, upper}
	w.file("f", []byte("data"), 0o644)
	w.xattr("f", "user.z", []byte("last"))
	w.xattr("f", "user.a", []byte("first"))
	w.xattr("f", "security.capability", capability)
	w.xattr("f", "trusted.overlay.opaque", []byte("y"))
	w.xattr("f", "user.overlay.origin", []byte("o"))
	w.times("f", fixedTime(2, 0))

	plain := tarHeader(t, compareBytes(t, empty, upper, CompareOptions{}), "f")
	if len(plain.PAXRecords) != 1 || plain.PAXRecords["SCHILY.xattr.security.capability"] != string(capability) {
		t.Fatalf("default compare records %q, want only security.capability", plain.PAXRecords)
	}
	layer := compareBytes(t, empty, upper, CompareOptions{AllXattrs: true})
	hdr := tarHeader(t, layer, "f")
	want := map[string]string{
		"SCHILY.xattr.security.capability": string(capability),
		"SCHILY.xattr.user.a":              "first",
		"SCHILY.xattr.user.z":              "last",
	}
	if len(hdr.PAXRecords) != len(want) {
		t.Fatalf("records %q, want %q", hdr.PAXRecords, want)
	}
	for k, v := range want {
		if hdr.PAXRecords[k] != v {
			t.Fatalf("records %q, want %q", hdr.PAXRecords, want)
		}
	}
	// Byte for byte what Go's own writer makes of that header.
	var goTar bytes.Buffer
	tw := tar.NewWriter(&goTar)
	if err := tw.WriteHeader(&tar.Header{
		Typeflag: tar.TypeReg, Name: "f", Mode: 0o644, Size: 4, ModTime: fixedTime(2, 0),
		Format: tar.FormatPAX, PAXRecords: want,
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write([]byte("data")); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(layer, goTar.Bytes()) {
		t.Fatal("all-xattrs layer differs from Go's archive/tar output for the same header")
	}

	if _, err := Apply(context.Background(), applied, bytes.NewReader(layer), ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, err := unix.Lgetxattr(filepath.Join(applied, "f"), "user.z", buf)
	if err != nil || string(buf[:n]) != "last" {
		t.Fatalf("user.z after apply: %q, %v", buf[:n], err)
	}
	if _, err := unix.Lgetxattr(filepath.Join(applied, "f"), "user.overlay.origin", buf); err != unix.ENODATA {
		t.Fatalf("user.overlay.origin after apply: %v, want ENODATA", err)
	}
}

// TestDifferIDMappedSnapshots: the Differ finds the maps in the upper mount's uidmap=/gidmap=
// options (overlay and bind uppers, as the overlay snapshotter with remap-ids mounts them)
// or in containerd's snapshot labels, and gives the layer of the unshifted container.
func TestDifferIDMappedSnapshots(t *testing.T) {
	testkit.RequireRoot(t, needsRoot)
	ctx, cs := testkit.ContentStore(t)
	lower, emptyLower := t.TempDir(), t.TempDir()
	lw := treeWriter{t, lower}
	lw.dir("etc", 0o755)
	lw.file("etc/hostname", []byte("base\n"), 0o644)
	lw.times("etc/hostname", fixedTime(0, 0))
	lw.times("etc", fixedTime(0, 0))
	plainUpper, shiftedUpper := t.TempDir(), t.TempDir()
	containerTree(t, plainUpper, identity)
	containerTree(t, shiftedUpper, toHost)
	idOpts := []string{"uidmap=" + testUIDMap, "gidmap=" + testGIDMap}
	withIDMap := func(ms []mount.Mount) []mount.Mount {
		ms[0].Options = append(ms[0].Options, idOpts...)
		return ms
	}
	tarType := diff.WithMediaType(ocispec.MediaTypeImageLayer)

	// The labels case runs first: later cases commit the same blob, which keeps its labels.
	for _, c := range []struct {
		name         string
		lower        string
		plain, upper []mount.Mount
		opts         []diff.Opt
		// ourLower replaces the read-only bind of lower on our side.
		ourLower []mount.Mount
	}{
		{"labels", lower, overlayMount(plainUpper, t.TempDir(), lower),
			overlayMount(shiftedUpper, t.TempDir(), lower),
			[]diff.Opt{diff.WithLabels(map[string]string{
				snapshots.LabelSnapshotUIDMapping: testUIDMap,
				snapshots.LabelSnapshotGIDMapping: testGIDMap,
			})}, nil},
		{"overlay options", lower, overlayMount(plainUpper, t.TempDir(), lower),
			withIDMap(overlayMount(shiftedUpper, t.TempDir(), lower)), nil, nil},
		{"bind options", emptyLower, bindMount(plainUpper, false),
			withIDMap(bindMount(shiftedUpper, false)), nil, nil},
		// A lower mounted as an idmapped overlay would show shifted lowerdirs: dropped too.
		{"options on both sides", lower, overlayMount(plainUpper, t.TempDir(), lower),
			withIDMap(overlayMount(shiftedUpper, t.TempDir(), lower)), nil,
			withIDMap(overlayMount(t.TempDir(), t.TempDir(), lower))},
	} {
		t.Run(c.name, func(t *testing.T) {
			want, err := walking.NewWalkingDiff(cs).Compare(ctx, bindMount(c.lower, true), c.plain, tarType)
			if err != nil {
				t.Fatalf("walking Compare of the unshifted upper: %v", err)
			}
			ourLower := c.ourLower
			if ourLower == nil {
				ourLower = bindMount(c.lower, true)
			}
			got, err := NewDiffer(cs).Compare(ctx, ourLower, c.upper, append(c.opts, tarType)...)
			if err != nil {
				t.Fatalf("Differ Compare of the idmapped upper: %v", err)
			}
			if !sameDesc(got, want) {
				t.Fatalf("idmapped compare %+v, unshifted containerd layer %+v", got, want)
			}
			for k := range blobLabels(t, ctx, cs, got.Digest) {
				if strings.HasPrefix(k, "containerd.io/snapshot/") {
					t.Errorf("snapshot label %s landed on the blob", k)
				}
			}
		})
	}
}

func TestIDMapsInvalid(t *testing.T) {
	if _, err := ParseIDMappings("0:1000"); err == nil || !strings.Contains(err.Error(), `"0:1000"`) {
		t.Fatalf("ParseIDMappings(0:1000): %v", err)
	}
	got, err := ParseIDMappings("0:1000:1,1:100000:65536")
	if err != nil || len(got) != 2 || got[1] != (specs.LinuxIDMapping{ContainerID: 1, HostID: 100000, Size: 65536}) {
		t.Fatalf("ParseIDMappings: %v, %v", got, err)
	}
	overlapping := IDMaps{UIDs: []specs.LinuxIDMapping{{ContainerID: 0, HostID: 10, Size: 5}, {ContainerID: 3, HostID: 100, Size: 1}}}
	dir := t.TempDir()
	_, err = Compare(context.Background(), dir, dir, io.Discard, CompareOptions{IDMaps: overlapping})
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "overlap on the container side") {
		t.Fatalf("overlapping ranges: %v", err)
	}
	_, err = Apply(context.Background(), dir, bytes.NewReader(make([]byte, 1024)), ApplyOptions{IDMaps: overlapping})
	if !errdefs.IsInvalidArgument(err) {
		t.Fatalf("overlapping ranges on apply: %v", err)
	}
}
