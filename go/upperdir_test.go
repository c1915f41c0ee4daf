package layerdiff

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/plugins/diff/walking"
	"github.com/containerd/containerd/v2/plugins/snapshots/overlay"

	"github.com/layerdiff/layerdiff/go/internal/testkit"
)

// overlaySnapshots makes, with containerd's overlayfs snapshotter, a base of two committed
// layers and returns the mounts of a read-only view of it (the lower) and of an active
// snapshot on it (the upper), as a commit of that active snapshot would diff them. parents
// is how many committed layers the lower has (1: a bind mount; 2: a read-only overlay).
func overlaySnapshots(t *testing.T, parents int, snapshotterOpts ...overlay.Opt) (lower, upper []mount.Mount) {
	t.Helper()
	ctx := context.Background()
	sn, err := overlay.NewSnapshotter(t.TempDir(), snapshotterOpts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sn.Close() })
	parent := ""
	for i := 0; i < parents; i++ {
		key := "layer" + string(rune('0'+i))
		mounts, err := sn.Prepare(ctx, key+"-active", parent)
		if err != nil {
			t.Fatal(err)
		}
		withMounted(t, mounts, func(root string) {
			must(t, os.MkdirAll(filepath.Join(root, "dir/sub", key), 0o755))
			must(t, os.WriteFile(filepath.Join(root, "dir/sub", key, "f"), []byte("layer "+key), 0o644))
			must(t, os.WriteFile(filepath.Join(root, "file"+key), []byte(key), 0o600))
			must(t, os.WriteFile(filepath.Join(root, "dir/shared"), []byte("from "+key), 0o644))
		})
		must(t, sn.Commit(ctx, key, key+"-active"))
		parent = key
	}
	lower, err = sn.View(ctx, "lower-view", parent)
	if err != nil {
		t.Fatal(err)
	}
	upper, err = sn.Prepare(ctx, "container", parent, snapshots.WithLabels(map[string]string{}))
	if err != nil {
		t.Fatal(err)
	}
	return lower, upper
}

func withMounted(t *testing.T, mounts []mount.Mount, f func(root string)) {
	t.Helper()
	root := t.TempDir()
	must(t, mount.All(mounts, root))
	defer func() { must(t, mount.UnmountAll(root, 0)) }()
	f(root)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// mutate changes a container's tree the ways a commit sees: writes, deletes of lower files
// and trees, a directory made again over a deleted one, a chmod, and (link) a hardlink to a
// copied-up lower file.
func mutate(t *testing.T, root string, link bool) {
	t.Helper()
	must(t, os.WriteFile(filepath.Join(root, "dir/shared"), []byte("changed in the container"), 0o644))
	must(t, os.WriteFile(filepath.Join(root, "new"), []byte("new file"), 0o644))
	must(t, os.Remove(filepath.Join(root, "filelayer0")))
	must(t, os.RemoveAll(filepath.Join(root, "dir/sub/layer0")))
	must(t, os.Mkdir(filepath.Join(root, "dir/sub/layer0"), 0o700))
	must(t, os.Chmod(filepath.Join(root, "dir"), 0o750))
	if link {
		must(t, os.Link(filepath.Join(root, "dir/shared"), filepath.Join(root, "link")))
	}
}

// diffBoth runs Differ.Compare and containerd's walking differ on the same mounts and
// returns our uncompressed layer, theirs, and whether ours took the upperdir path (and why
// not).
func diffBoth(t *testing.T, lower, upper []mount.Mount) (ours, theirs []byte, fastPath bool, reason string) {
	t.Helper()
	calls := 0
	upperdirCompareHook = func(fast bool, why string) { calls++; fastPath, reason = fast, why }
	defer func() { upperdirCompareHook = nil }()
	ctxA, oursStore := testkit.ContentStore(t)
	got, err := NewDiffer(oursStore).Compare(ctxA, lower, upper)
	if err != nil {
		t.Fatalf("layerdiff Compare: %v", err)
	}
	if calls != 1 {
		t.Fatalf("the upperdir decision was reported %d times, not once", calls)
	}
	ctxB, theirStore := testkit.ContentStore(t)
	want, err := walking.NewWalkingDiff(theirStore).Compare(ctxB, lower, upper)
	if err != nil {
		t.Fatalf("walking Compare: %v", err)
	}
	return uncompressed(t, ctxA, oursStore, got), uncompressed(t, ctxB, theirStore, want), fastPath, reason
}

// TestDifferUpperdirFastPath: on the overlayfs snapshotter's mounts (lower a bind mount or a
// read-only overlay; with and without userxattr), Differ.Compare reads the upperdir and
// writes the walking differ's layer; turned off, it walks and writes the same.
func TestDifferUpperdirFastPath(t *testing.T) {
	testkit.RequireRoot(t, needsRoot)
	for _, c := range []struct {
		name    string
		parents int
		link    bool
		opts    []overlay.Opt
	}{
		{"bind-lower", 1, true, nil},
		{"overlay-lower", 2, true, nil},
		// A hardlinked copy-up under userxattr is refused by the core (see the fallback test).
		{"overlay-lower-userxattr", 2, false, []overlay.Opt{overlay.WithMountOptions([]string{"userxattr"})}},
	} {
		t.Run(c.name, func(t *testing.T) {
			lower, upper := overlaySnapshots(t, c.parents, c.opts...)
			withMounted(t, upper, func(root string) { mutate(t, root, c.link) })
			ours, theirs, fast, reason := diffBoth(t, lower, upper)
			if !fast {
				t.Fatalf("the upperdir path was not taken: %s (mounts %+v over %+v)", reason, upper, lower)
			}
			if len(theirs) < 2048 || !bytes.Equal(ours, theirs) {
				t.Fatalf("upperdir layer (%d bytes) differs from the walking differ's (%d bytes)", len(ours), len(theirs))
			}
			upperdirCompareHook = nil
			ctx, cs := testkit.ContentStore(t)
			desc, err := NewDiffer(cs, WithUpperdirCompare(false)).Compare(ctx, lower, upper)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(uncompressed(t, ctx, cs, desc), theirs) {
				t.Fatal("with the upperdir path off, the layer differs from the walking differ's")
			}
		})
	}
}

// TestDifferUpperdirFallback: where the upperdir cannot be represented (a lower directory
// renamed under redirect_dir=on) or the mounts are not the snapshotter's (unknown options),
// Differ.Compare walks both trees and still writes the walking differ's layer.
func TestDifferUpperdirFallback(t *testing.T) {
	testkit.RequireRoot(t, needsRoot)
	t.Run("redirect", func(t *testing.T) {
		lower, upper := overlaySnapshots(t, 2)
		redirecting := []mount.Mount{upper[0]}
		redirecting[0].Options = append(append([]string{}, upper[0].Options...), "redirect_dir=on")
		withMounted(t, redirecting, func(root string) {
			must(t, os.Rename(filepath.Join(root, "dir/sub"), filepath.Join(root, "moved")))
		})
		ours, theirs, fast, reason := diffBoth(t, lower, upper)
		if fast || !strings.Contains(reason, "redirect") {
			t.Fatalf("fast path %v, reason %q: want a fallback because of the redirect", fast, reason)
		}
		if len(theirs) < 2048 || !bytes.Equal(ours, theirs) {
			t.Fatalf("fallback layer (%d bytes) differs from the walking differ's (%d bytes)", len(ours), len(theirs))
		}
	})
	t.Run("hardlinked-copy-up-userxattr", func(t *testing.T) {
		lower, upper := overlaySnapshots(t, 2, overlay.WithMountOptions([]string{"userxattr"}))
		withMounted(t, upper, func(root string) { mutate(t, root, true) })
		ours, theirs, fast, reason := diffBoth(t, lower, upper)
		if fast || !strings.Contains(reason, "hardlinked copy-up") {
			t.Fatalf("fast path %v, reason %q: want a fallback because of the hardlink", fast, reason)
		}
		if !bytes.Equal(ours, theirs) {
			t.Fatal("fallback layer differs from the walking differ's")
		}
	})
	t.Run("turned-off-by-env", func(t *testing.T) {
		lower, upper := overlaySnapshots(t, 1)
		withMounted(t, upper, func(root string) { mutate(t, root, true) })
		t.Setenv(UpperdirCompareEnv, "0")
		ours, theirs, fast, reason := diffBoth(t, lower, upper)
		if fast || reason != "turned off" {
			t.Fatalf("fast path %v, reason %q: want it turned off", fast, reason)
		}
		if !bytes.Equal(ours, theirs) {
			t.Fatal("walked layer differs from the walking differ's")
		}
	})
	t.Run("unknown-option", func(t *testing.T) {
		lower, upper := overlaySnapshots(t, 2, overlay.WithMountOptions([]string{"redirect_dir=nofollow"}))
		withMounted(t, upper, func(root string) { mutate(t, root, true) })
		ours, theirs, fast, reason := diffBoth(t, lower, upper)
		if fast || !strings.Contains(reason, `"redirect_dir=nofollow"`) {
			t.Fatalf("fast path %v, reason %q: want a fallback naming the option", fast, reason)
		}
		if !bytes.Equal(ours, theirs) {
			t.Fatal("fallback layer differs from the walking differ's")
		}
	})
}
