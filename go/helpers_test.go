package layerdiff

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/diff"
	"github.com/containerd/containerd/v2/core/diff/apply"
	"github.com/containerd/containerd/v2/core/mount"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"

	"github.com/layerdiff/layerdiff/go/internal/testkit"
	"github.com/layerdiff/layerdiff/go/internal/treecmp"
)

// needsRoot is what this package's tests need root for (testkit.RequireRoot).
const needsRoot = "bind/overlay mounts, mknod, chown, trusted.* xattrs"

func bindMount(dir string, readonly bool) []mount.Mount {
	opts := []string{"rbind"}
	if readonly {
		opts = append(opts, "ro")
	} else {
		opts = append(opts, "rw")
	}
	return []mount.Mount{{Type: "bind", Source: dir, Options: opts}}
}

func overlayMount(upper, work string, lowers ...string) []mount.Mount {
	return []mount.Mount{{
		Type:   "overlay",
		Source: "overlay",
		Options: []string{
			"lowerdir=" + strings.Join(lowers, ":"),
			"upperdir=" + upper,
			"workdir=" + work,
		},
	}}
}

// fixedTime gives deterministic, distinct mtimes; nanos 0 exercise content comparison.
func fixedTime(sec int64, nsec int64) time.Time { return time.Unix(1_700_000_000+sec, nsec) }

// treeWriter builds test trees and fails the test on any error.
type treeWriter struct {
	t    testing.TB
	root string
}

func (w treeWriter) p(name string) string { return filepath.Join(w.root, name) }

func (w treeWriter) dir(name string, perm os.FileMode) {
	w.t.Helper()
	if err := os.MkdirAll(w.p(name), 0o755); err != nil {
		w.t.Fatal(err)
	}
	w.must(os.Chmod(w.p(name), perm))
}

func (w treeWriter) file(name string, data []byte, perm os.FileMode) {
	w.t.Helper()
	w.must(os.MkdirAll(filepath.Dir(w.p(name)), 0o755))
	_ = os.Remove(w.p(name))
	w.must(os.WriteFile(w.p(name), data, perm))
	w.must(os.Chmod(w.p(name), perm))
}

func (w treeWriter) symlink(name, target string) {
	w.t.Helper()
	_ = os.Remove(w.p(name))
	w.must(os.Symlink(target, w.p(name)))
}

func (w treeWriter) hardlink(name, existing string) {
	w.t.Helper()
	w.must(os.Link(w.p(existing), w.p(name)))
}

func (w treeWriter) mknod(name string, mode uint32, major, minor uint32) {
	w.t.Helper()
	w.must(unix.Mknod(w.p(name), mode, int(unix.Mkdev(major, minor))))
}

func (w treeWriter) chown(name string, uid, gid int) {
	w.t.Helper()
	w.must(os.Lchown(w.p(name), uid, gid))
}

func (w treeWriter) xattr(name, key string, value []byte) {
	w.t.Helper()
	w.must(unix.Lsetxattr(w.p(name), key, value, 0))
}

func (w treeWriter) times(name string, tm time.Time) {
	w.t.Helper()
	ts := []unix.Timespec{unix.NsecToTimespec(tm.UnixNano()), unix.NsecToTimespec(tm.UnixNano())}
	w.must(unix.UtimesNanoAt(unix.AT_FDCWD, w.p(name), ts, unix.AT_SYMLINK_NOFOLLOW))
}

func (w treeWriter) remove(name string) {
	w.t.Helper()
	w.must(os.RemoveAll(w.p(name)))
}

func (w treeWriter) must(err error) {
	w.t.Helper()
	if err != nil {
		w.t.Fatal(err)
	}
}

// capability is a valid-looking security.capability value (v2, cap_net_bind_service).
var capability = []byte{0, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}

// fixedPair builds a small lower tree and an upper tree that changes it in every way the
// layer format knows: add, modify (content, mode, owner, times, capability), delete (file,
// directory with content, symlink), type changes, hardlinks, devices, fifos, long and
// non-ASCII names. Each seed varies sizes and names a little.
func fixedPair(t testing.TB, lower, upper string, seed int) {
	t.Helper()
	l := treeWriter{t, lower}
	l.dir("etc", 0o755)
	l.file("etc/passwd", []byte("root:x:0:0::/root:/bin/sh\n"), 0o644)
	l.file("etc/hosts", []byte("127.0.0.1 localhost\n"), 0o644)
	l.dir("usr/bin", 0o755)
	l.file("usr/bin/tool", bytes.Repeat([]byte("ELF binary "), 1000+seed), 0o755)
	l.hardlink("usr/bin/tool-link", "usr/bin/tool")
	l.file("usr/bin/same-size", []byte("aaaa"), 0o644)
	l.dir("var/cache/deep/deeper", 0o700)
	l.file("var/cache/deep/deeper/f", []byte("cached"), 0o600)
	l.file("var/cache/other", []byte("other"), 0o644)
	l.symlink("usr/bin/sh", "/bin/busybox")
	l.file("replace-me", []byte("file becomes a dir"), 0o644)
	l.dir("dir-becomes-file", 0o755)
	l.file("dir-becomes-file/inner", []byte("x"), 0o644)
	l.dir("opaque", 0o755)
	l.file("opaque/a", []byte("a"), 0o644)
	l.file(fmt.Sprintf("seed-%d", seed), []byte("seed"), 0o644)
	for _, n := range []string{"etc/passwd", "etc/hosts", "usr/bin/tool", "usr/bin/same-size", "var/cache/other", "replace-me", "opaque/a"} {
		l.times(n, fixedTime(int64(len(n)), 0))
	}

	testkit.CopyTree(t, lower, upper)
	u := treeWriter{t, upper}
	u.file("etc/hosts", []byte("127.0.0.1 localhost changed\n"), 0o644)
	u.chown("etc/passwd", 1000, 1000)
	u.file("usr/bin/same-size", []byte("bbbb"), 0o644)
	u.times("usr/bin/same-size", fixedTime(int64(len("usr/bin/same-size")), 0))
	u.remove("var/cache/deep")
	u.remove("usr/bin/sh")
	u.remove("replace-me")
	u.dir("replace-me", 0o750)
	u.file("replace-me/child", []byte("child"), 0o640)
	u.remove("dir-becomes-file")
	u.file("dir-becomes-file", []byte("now a file"), 0o600)
	u.file("new/dir/file.txt", bytes.Repeat([]byte{byte(seed)}, 70_000+seed*13), 0o644)
	u.file("new/empty", nil, 0o400)
	u.symlink("new/link", "../etc/hosts")
	u.hardlink("new/tool-link2", "usr/bin/tool")
	u.mknod("new/fifo", unix.S_IFIFO|0o644, 0, 0)
	u.mknod("new/null", unix.S_IFCHR|0o666, 1, 3)
	u.mknod("new/blk", unix.S_IFBLK|0o660, 7, 0)
	u.file("new/ping", []byte("ping"), 0o755)
	u.xattr("new/ping", "security.capability", capability)
	u.file("new/"+strings.Repeat("long-name-", 12)+"end", []byte("long"), 0o644)
	u.file("new/"+strings.Repeat("d", 60)+"/"+strings.Repeat("e", 60)+"/"+strings.Repeat("f", 60), []byte("split"), 0o644)
	u.file("new/ünïcödé", []byte("utf8"), 0o644)
	u.file("new/owned", []byte("owned"), 0o644)
	u.chown("new/owned", 4_000_000, 5)
	u.remove("opaque/a")
	u.file("opaque/b", []byte("b"), 0o644)
	u.dir("new/private", 0o700)
	for i := 0; i < 5+seed%7; i++ {
		u.file(fmt.Sprintf("new/many/f%03d", i), bytes.Repeat([]byte{byte(i)}, i*1000), 0o644)
	}
	u.times("new/dir/file.txt", fixedTime(100, 123_456_789))
	u.times("new", fixedTime(200, 0))
}

// requireSameTree fails with the differing paths when the two trees differ in anything
// apply must reproduce.
func requireSameTree(t testing.TB, wantRoot, gotRoot string) {
	t.Helper()
	requireSameTreeWith(t, wantRoot, gotRoot, treecmp.Options{})
}

// requireSameTreeAs compares mtimes in whole seconds when secondsOnly (a layer carries
// seconds, so an applied tree matches its source tree only to the second).
func requireSameTreeAs(t testing.TB, wantRoot, gotRoot string, secondsOnly bool) {
	t.Helper()
	requireSameTreeWith(t, wantRoot, gotRoot, treecmp.Options{MtimeSeconds: secondsOnly})
}

// requireSameTreeButDirTimes ignores directory mtimes: directories created implicitly (as
// missing parents) end with the time their last child was created, in both appliers.
func requireSameTreeButDirTimes(t testing.TB, wantRoot, gotRoot string) {
	t.Helper()
	requireSameTreeWith(t, wantRoot, gotRoot, treecmp.Options{IgnoreDirTimes: true})
}

// requireSameTreeWith compares with o, never looking at the root's own mode and times (the
// mount point's, never the layer's) or at overlay whiteouts' times (made by the apply).
func requireSameTreeWith(t testing.TB, wantRoot, gotRoot string, o treecmp.Options) {
	t.Helper()
	o.IgnoreRootMode, o.IgnoreRootTimes, o.IgnoreWhiteoutTimes = true, true, true
	diffs, err := treecmp.Compare(wantRoot, gotRoot, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(diffs) > 0 {
		if len(diffs) > 20 {
			diffs = append(diffs[:20], fmt.Sprintf("... and %d more", len(diffs)-20))
		}
		t.Fatalf("trees differ (%s vs %s):\n%s", wantRoot, gotRoot, strings.Join(diffs, "\n"))
	}
}

// applyBoth applies layer with layerdiff and with containerd's fs applier, each onto its own
// copy of lower through a bind mount, and requires the same descriptor and the same tree.
// It returns the root layerdiff applied onto.
func applyBoth(t testing.TB, ctx context.Context, cs content.Store, layer ocispec.Descriptor, lower string, opts ...diff.ApplyOpt) string {
	t.Helper()
	ourRoot, theirRoot := t.TempDir(), t.TempDir()
	testkit.CopyTree(t, lower, ourRoot)
	testkit.CopyTree(t, lower, theirRoot)
	got, err := NewDiffer(cs).Apply(ctx, layer, bindMount(ourRoot, false), opts...)
	if err != nil {
		t.Fatalf("layerdiff Apply: %v", err)
	}
	want, err := apply.NewFileSystemApplier(cs).Apply(ctx, layer, bindMount(theirRoot, false), opts...)
	if err != nil {
		t.Fatalf("containerd Apply: %v", err)
	}
	if !sameDesc(got, want) {
		t.Errorf("descriptor %+v, containerd %+v", got, want)
	}
	requireSameTree(t, theirRoot, ourRoot)
	return ourRoot
}

// openFDs counts this process's open file descriptors.
func openFDs(t testing.TB) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// readBlob returns a stored blob's bytes.
func readBlob(t testing.TB, ctx context.Context, cs content.Store, desc ocispec.Descriptor) []byte {
	t.Helper()
	ra, err := cs.ReaderAt(ctx, desc)
	if err != nil {
		t.Fatal(err)
	}
	defer ra.Close()
	data, err := io.ReadAll(content.NewReader(ra))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// sameDesc compares what a differ or applier sets in a descriptor.
func sameDesc(a, b ocispec.Descriptor) bool {
	return a.MediaType == b.MediaType && a.Digest == b.Digest && a.Size == b.Size
}
