package apply

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/layerdiff/layerdiff/go/internal/testkit"
	"github.com/layerdiff/layerdiff/go/internal/treecmp"
)

// needsRoot is what apply parity needs root for (testkit.RequireRoot).
const needsRoot = "mknod, chown, trusted.* xattrs, overlay mounts"

// hangAfter bounds one apply: far more than any corpus layer takes.
const hangAfter = 2 * time.Minute

// parityCase is one layer applied by both implementations onto twin trees.
type parityCase struct {
	name  string
	layer []byte
	// setup builds the tree the layer is applied onto (in both twins), may be nil.
	setup func(t *testing.T, root string)
	// lower builds the overlay lowerdir or aufs ro branch (not in remove mode), may be nil.
	lower func(t *testing.T, root string)
	// fixedSince17 marks a layer containerd 1.7 applies but v2 refuses; aufs mode keeps v2's
	// checks (docs/deviations.md), so there layerdiff must refuse it.
	fixedSince17 bool
}

// runParity applies c in remove, overlay and aufs mode and compares everything. Aufs mode's
// oracle is containerd 1.7 (the last with that path), the others' containerd's archive.Apply.
func runParity(t *testing.T, c parityCase) {
	for _, mode := range []string{"remove", "overlay", "aufs"} {
		t.Run(c.name+"/"+mode, func(t *testing.T) { runMode(t, c, mode) })
	}
}

func runMode(t *testing.T, c parityCase, mode string) {
	overlay := mode == "overlay"
	base := t.TempDir()
	var roots, lowers [2]string
	for i, side := range []string{"containerd", "layerdiff"} {
		top := filepath.Join(base, side)
		roots[i] = filepath.Join(top, "root")
		lowers[i] = filepath.Join(top, "lower")
		for _, d := range []string{roots[i], lowers[i]} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if c.setup != nil {
			c.setup(t, roots[i])
		}
		if mode != "remove" && c.lower != nil {
			c.lower(t, lowers[i])
		}
		testkit.Settle(t, top)
	}
	var parents [2][]string
	if mode != "remove" {
		parents = [2][]string{{lowers[0]}, {lowers[1]}}
	}
	start := time.Now()
	var want, got testkit.Result
	if mode == "aufs" {
		want = testkit.ApplyContainerd17Aufs(t, roots[0], c.layer, parents[0], hangAfter)
		got = testkit.ApplyOursAufs(t, roots[1], c.layer, parents[1], hangAfter)
	} else {
		want = testkit.ApplyContainerd(t, roots[0], c.layer, overlay, parents[0], hangAfter)
		got = testkit.ApplyOurs(t, roots[1], c.layer, overlay, parents[1], hangAfter)
	}
	if errors.Is(got.Err, testkit.ErrCrash) || errors.Is(got.Err, testkit.ErrHang) {
		t.Fatalf("layerdiff broke: %v", got.Err)
	}
	if mode == "aufs" && c.fixedSince17 {
		if want.Err != nil || got.Err == nil {
			t.Fatalf("want containerd 1.7 to apply it and layerdiff to refuse it, as v2 does\ncontainerd 1.7 error: %v\nlayerdiff error: %v", want.Err, got.Err)
		}
		// Compared as when both fail: nothing outside the root may differ.
		want.Err = errors.New("refused by containerd v2")
	}
	if (want.Err == nil) != (got.Err == nil) {
		t.Fatalf("containerd error: %v\nlayerdiff error: %v", want.Err, got.Err)
	}
	if want.Err == nil && (want.Digest != got.Digest || want.Size != got.Size) {
		t.Errorf("descriptor: containerd %s/%d, layerdiff %s/%d", want.Digest, want.Size, got.Digest, got.Size)
	}
	// Compare the whole twin (root and its siblings): a write outside the root shows too.
	opts := treecmp.Options{FreshSince: start.Add(-time.Second)}
	diffs, err := treecmp.Compare(filepath.Join(base, "containerd"), filepath.Join(base, "layerdiff"), opts)
	if err != nil {
		t.Fatal(err)
	}
	if want.Err != nil {
		t.Logf("both failed:\n  containerd: %v\n  layerdiff:  %v", want.Err, got.Err)
		// Both failed: only require that nothing outside the root changed.
		var outside []string
		for _, d := range diffs {
			if !strings.HasPrefix(d, "root/") && !strings.HasPrefix(d, "root:") {
				outside = append(outside, d)
			}
		}
		if len(outside) > 0 {
			t.Errorf("both failed (containerd: %v) but trees differ outside the root:\n%s", want.Err, strings.Join(outside, "\n"))
		}
		return
	}
	if len(diffs) > 0 {
		t.Errorf("trees differ (containerd vs layerdiff):\n%s", strings.Join(diffs, "\n"))
	}
	if overlay {
		compareMerged(t, lowers, roots, start)
	}
}

// compareMerged mounts each upper over its lower with overlayfs and compares the views.
func compareMerged(t *testing.T, lowers, uppers [2]string, start time.Time) {
	var merged [2]string
	for i := range uppers {
		work := filepath.Join(filepath.Dir(uppers[i]), "work")
		m := filepath.Join(filepath.Dir(uppers[i]), "merged")
		for _, d := range []string{work, m} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", lowers[i], uppers[i], work)
		if err := unix.Mount("overlay", m, "overlay", 0, opts); err != nil {
			t.Fatalf("mount overlay: %v", err)
		}
		defer unix.Unmount(m, unix.MNT_DETACH)
		defer os.RemoveAll(work)
		merged[i] = m
	}
	diffs, err := treecmp.Compare(merged[0], merged[1], treecmp.Options{FreshSince: start.Add(-time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if len(diffs) > 0 {
		t.Errorf("merged overlay views differ:\n%s", strings.Join(diffs, "\n"))
	}
}

// tarBuilder writes headers with Go's archive/tar (the writer containerd uses).
type tarBuilder struct {
	buf bytes.Buffer
	tw  *tar.Writer
	t   *testing.T
}

func newTar(t *testing.T) *tarBuilder {
	b := &tarBuilder{t: t}
	b.tw = tar.NewWriter(&b.buf)
	return b
}

func (b *tarBuilder) add(h *tar.Header, data []byte) *tarBuilder {
	if h.Typeflag == tar.TypeXGlobalHeader {
		if err := b.tw.WriteHeader(h); err != nil {
			b.t.Fatalf("write header %q: %v", h.Name, err)
		}
		return b
	}
	if h.ModTime.IsZero() {
		h.ModTime = time.Unix(1600000000, 0)
	}
	if h.Typeflag == tar.TypeReg && h.Size == 0 {
		h.Size = int64(len(data))
	}
	if h.Mode == 0 && !strings.Contains(h.Name, ".wh.") {
		h.Mode = 0o644
		if h.Typeflag == tar.TypeDir {
			h.Mode = 0o755
		}
	}
	if err := b.tw.WriteHeader(h); err != nil {
		b.t.Fatalf("write header %q: %v", h.Name, err)
	}
	if len(data) > 0 {
		if _, err := b.tw.Write(data); err != nil {
			b.t.Fatal(err)
		}
	}
	return b
}

func (b *tarBuilder) dir(name string) *tarBuilder {
	return b.add(&tar.Header{Typeflag: tar.TypeDir, Name: name}, nil)
}
func (b *tarBuilder) file(name, content string) *tarBuilder {
	return b.add(&tar.Header{Typeflag: tar.TypeReg, Name: name}, []byte(content))
}
func (b *tarBuilder) symlink(target, name string) *tarBuilder {
	return b.add(&tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777}, nil)
}
func (b *tarBuilder) link(target, name string) *tarBuilder {
	return b.add(&tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target}, nil)
}

func (b *tarBuilder) bytes() []byte {
	if err := b.tw.Close(); err != nil {
		b.t.Fatal(err)
	}
	return b.buf.Bytes()
}

// fsSetup is a tiny tree builder for setup functions.
type fsOp func(t *testing.T, root string)

func tree(ops ...fsOp) func(t *testing.T, root string) {
	return func(t *testing.T, root string) {
		for _, op := range ops {
			op(t, root)
		}
	}
}

func mkdir(p string, mode os.FileMode) fsOp {
	return func(t *testing.T, root string) {
		if err := os.MkdirAll(filepath.Join(root, p), mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(filepath.Join(root, p), mode)
	}
}
func mkfile(p, content string, mode os.FileMode) fsOp {
	return func(t *testing.T, root string) {
		if err := os.WriteFile(filepath.Join(root, p), []byte(content), mode); err != nil {
			t.Fatal(err)
		}
	}
}
func mksymlink(target, p string) fsOp {
	return func(t *testing.T, root string) {
		if err := os.Symlink(target, filepath.Join(root, p)); err != nil {
			t.Fatal(err)
		}
	}
}
func mkhardlink(target, p string) fsOp {
	return func(t *testing.T, root string) {
		if err := os.Link(filepath.Join(root, target), filepath.Join(root, p)); err != nil {
			t.Fatal(err)
		}
	}
}
func setxattr(p, k, v string) fsOp {
	return func(t *testing.T, root string) {
		if err := unix.Lsetxattr(filepath.Join(root, p), k, []byte(v), 0); err != nil {
			t.Fatal(err)
		}
	}
}
