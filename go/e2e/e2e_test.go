package e2e

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/layerdiff/layerdiff/go/internal/treecmp"
)

var snapshotters = []string{"overlayfs", "native"}

var viewCounter atomic.Int64

func mode(local bool) string {
	if local {
		return "local"
	}
	return "transfer"
}

// importImage runs `ctr images import` of img into namespace ns of d, unpacking into
// snapshotter sn, through the transfer service or (local) in ctr with the diff service. It
// returns the unpacked tree, read-only (see unpacked).
func importImage(t *testing.T, d *daemon, ns string, img *testImage, sn string, local bool) string {
	t.Helper()
	return unpacked(t, d, ns, img, sn, func() {
		if _, stderr, err := d.ctr(ns, importArgs(img, sn, local)...); err != nil {
			t.Fatalf("%s: ctr images import %s (%s, %s): %v\n%s\n%s", d.kind, img.name, mode(local), sn, err, stderr, tail(d.log, 15))
		}
	})
}

// unpacked runs unpack (which must unpack img into namespace ns, snapshotter sn of d) and
// returns the top snapshot's tree. overlayfs: a view (an overlay of the layers' own
// directories). native: the committed directory itself, since a native view is a copy
// that does not keep directory times; it is the newest snapshot directory (the daemon
// numbers them in order, and the tests create snapshots one daemon call at a time).
func unpacked(t *testing.T, d *daemon, ns string, img *testImage, sn string, unpack func()) string {
	t.Helper()
	unpack()
	if _, err := d.client.SnapshotService(sn).Stat(d.ctx(ns), img.chainID()); err != nil {
		t.Fatalf("%s: %s was imported but not unpacked into %s: %v", d.kind, img.name, sn, err)
	}
	if sn != "native" {
		return view(t, d, ns, sn, img.chainID())
	}
	dir := filepath.Join(d.dir, "root", "io.containerd.snapshotter.v1.native", "snapshots")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	top := -1
	for _, e := range entries {
		if n, err := strconv.Atoi(e.Name()); err == nil && n > top {
			top = n
		}
	}
	if top < 0 {
		t.Fatalf("%s: no native snapshot in %s", d.kind, dir)
	}
	return filepath.Join(dir, strconv.Itoa(top))
}

func importArgs(img *testImage, sn string, local bool) []string {
	args := []string{"images", "import", "--snapshotter", sn}
	if local {
		args = append(args, "--local")
	}
	return append(args, img.archive)
}

// view mounts a read-only view of snapshot parent (in namespace ns, snapshotter sn of d) and
// returns where; the test's cleanup unmounts and removes it.
func view(t *testing.T, d *daemon, ns, sn, parent string) string {
	t.Helper()
	// A lease keeps the garbage collector off the view (it is referenced by nothing else).
	ctx, done, err := d.client.WithLease(d.ctx(ns))
	if err != nil {
		t.Fatal(err)
	}
	key := fmt.Sprintf("e2e-view-%d", viewCounter.Add(1))
	mounts, err := d.client.SnapshotService(sn).View(ctx, key, parent)
	if err != nil {
		t.Fatalf("%s: view of %s in %s: %v", d.kind, parent, sn, err)
	}
	dir, err := os.MkdirTemp(env.tmp, "view-")
	if err != nil {
		t.Fatal(err)
	}
	if err := mount.All(mounts, dir); err != nil {
		t.Fatalf("%s: mounting the view of %s: %v", d.kind, parent, err)
	}
	t.Cleanup(func() {
		if err := mount.UnmountAll(dir, 0); err != nil {
			t.Errorf("unmounting %s: %v", dir, err)
		}
		_ = os.Remove(dir)
		if err := d.client.SnapshotService(sn).Remove(ctx, key); err != nil {
			t.Errorf("removing view %s: %v", key, err)
		}
		if err := done(ctx); err != nil {
			t.Errorf("deleting the lease of view %s: %v", key, err)
		}
	})
	return dir
}

// sameTree fails unless trees a and b are the same: types, content, modes, owners, xattrs,
// devices, links, hardlink groups and mtimes to the nanosecond (the root's own times are
// the snapshot's creation).
func sameTree(t *testing.T, what, a, b string) {
	t.Helper()
	sameTreeSince(t, what, a, b, time.Time{})
}

// sameTreeSince is sameTree where mtimes both at or after since count as equal: the native
// snapshotter copies the parent snapshot into each new one without keeping directory times,
// so in both daemons a directory the top layer leaves alone carries its copy's time.
func sameTreeSince(t *testing.T, what, a, b string, since time.Time) {
	t.Helper()
	diffs, err := treecmp.Compare(a, b, treecmp.Options{IgnoreRootTimes: true, FreshSince: since})
	if err != nil {
		t.Fatal(err)
	}
	if len(diffs) > 0 {
		if len(diffs) > 20 {
			diffs = append(diffs[:20], fmt.Sprintf("... %d more", len(diffs)-20))
		}
		t.Fatalf("%s: different trees:\n%s", what, strings.Join(diffs, "\n"))
	}
}

// wantCounts fails unless the layerdiff counters of d moved by exactly want.
func wantCounts(t *testing.T, d *daemon, before map[string]int, want map[string]int) {
	t.Helper()
	if got := delta(before, d.counters(t)); !maps.Equal(got, want) {
		t.Fatalf("%s: layerdiff counters moved by %v, want %v", d.kind, got, want)
	}
}

// TestUnpack: the same image (a real tree, a change layer with everything, a zstd tail)
// imported with ctr through the transfer service and with --local, into overlayfs and native:
// fork and proxy unpack the tree the stock walking daemon does, and layerdiff applied every
// layer (counters and debug log).
func TestUnpack(t *testing.T) {
	requireDaemons(t)
	img := env.images.full
	t.Logf("image: %d entries of this machine's trees + %d layers", env.images.realFiles, len(img.layers))
	ref := map[string]string{}
	refStart := time.Now()
	for _, sn := range snapshotters {
		ref[sn] = importImage(t, env.stock, "ref-"+sn, img, sn, false)
	}
	for _, d := range []*daemon{env.fork, env.proxy} {
		for _, local := range []bool{false, true} {
			for _, sn := range snapshotters {
				t.Run(fmt.Sprintf("%s/%s/%s", d.kind, mode(local), sn), func(t *testing.T) {
					ns := fmt.Sprintf("unpack-%s-%s", mode(local), sn)
					before, logged := d.counters(t), d.logCount("diff applied (layerdiff)")
					tree := importImage(t, d, ns, img, sn, local)
					wantCounts(t, d, before, map[string]int{"applies/ok": len(img.layers)})
					if n := d.logCount("diff applied (layerdiff)") - logged; n != len(img.layers) {
						t.Errorf("%s: %d \"diff applied (layerdiff)\" debug lines, want %d", d.kind, n, len(img.layers))
					}
					what := fmt.Sprintf("stock walking vs %s (%s, %s)", d.kind, mode(local), sn)
					if sn == "native" {
						sameTreeSince(t, what, ref[sn], tree, refStart)
					} else {
						sameTree(t, what, ref[sn], tree)
					}
				})
			}
		}
	}
}

// TestParallelUnpack: a pull (from a registry in this process) through the transfer service
// with max_concurrent_unpacks = 3: overlayfs (which can rebase) unpacks the layers in
// parallel, each into a bare upperdir; the tree still equals the stock daemon's sequential
// unpack. (containerd limits only pulls, not imports, this way.)
func TestParallelUnpack(t *testing.T) {
	requireDaemons(t)
	img := env.images.full
	ref := importImage(t, env.stock, "ref-parallel", img, "overlayfs", false)
	reg := serveRegistry(t, img)
	for _, kind := range []daemonKind{fork, proxy} {
		t.Run(kind.String(), func(t *testing.T) {
			d, err := startDaemon(t.Context(), env.bins, env.tmp, kind, daemonOptions{unpacks: 3})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if err := d.stop(); err != nil {
					t.Error(err)
				}
			})
			before := d.counters(t)
			tree := unpacked(t, d, "parallel", img, "overlayfs", func() {
				if _, stderr, err := d.ctr("parallel", "images", "pull", "--plain-http", "--snapshotter", "overlayfs", reg+"/e2e:full"); err != nil {
					t.Fatalf("%s: ctr images pull: %v\n%s\n%s", kind, err, stderr, tail(d.log, 15))
				}
			})
			wantCounts(t, d, before, map[string]int{"applies/ok": len(img.layers)})
			if d.logCount("parallel=true") == 0 {
				t.Fatalf("%s: no \"image unpacked\" with parallel=true in the log: the unpack was sequential\n%s", kind, tail(d.log, 10))
			}
			sameTree(t, kind.String()+" parallel unpack vs stock walking", ref, tree)
		})
	}
}
