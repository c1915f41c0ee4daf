package layerdiff

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/diff"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/pkg/labels"
	"github.com/containerd/containerd/v2/plugins/diff/walking"
	"github.com/containerd/containerd/v2/plugins/snapshots/overlay"
	digest "github.com/opencontainers/go-digest"

	"github.com/layerdiff/layerdiff/go/internal/overlayops"
	"github.com/layerdiff/layerdiff/go/internal/testkit"
)

// overlayTraces is the file of pinned generator traces shared with tests/overlay_kernel.rs.
const overlayTraces = "internal/overlayops/testdata/traces.txt"

// overlaySeeds is OVERLAY_SEEDS (seeds per configuration), 60 by default as in the Rust test.
func overlaySeeds(t *testing.T) uint64 {
	v := os.Getenv("OVERLAY_SEEDS")
	if v == "" {
		return 60
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		t.Fatalf("OVERLAY_SEEDS=%q: %v", v, err)
	}
	return n
}

// pinnedTraces reads the "trace CONFIG SEED SHA256" lines of overlayTraces.
func pinnedTraces(t *testing.T) map[string]string {
	f, err := os.Open(overlayTraces)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pinned := map[string]string{}
	s := bufio.NewScanner(f)
	for s.Scan() {
		if fields := strings.Fields(s.Text()); len(fields) == 4 && fields[0] == "trace" {
			pinned[fields[1]+" "+fields[2]] = fields[3]
		}
	}
	if err := s.Err(); err != nil || len(pinned) == 0 {
		t.Fatalf("%s: no pinned traces (%v)", overlayTraces, err)
	}
	return pinned
}

// TestDifferUpperdirSeeds runs the seeds of the kernel-oracle test tests/overlay_kernel.rs
// through Differ.Compare on containerd's overlay snapshotter: for each seed, the same lower
// tree (go/internal/overlayops, the Go port of its generator, pinned to it by trace hashes) is
// committed as a snapshot, an active snapshot on it is mounted and changed by the same
// operations, and Differ.Compare (which reads the upperdir) must write the layer of
// containerd's walking differ on the same mounts: same diffID, same uncompressed bytes,
// with SOURCE_DATE_EPOCH when the seed draws it. It falls back only for the reasons the
// Rust test allows the configuration, and says so.
//
// Configurations: the snapshotter's default mounts (index=off, the kernel's default
// redirect_dir and metacopy: the Rust "plain" configuration when those are off), the same
// with the lower tree built across two committed layers (a read-only overlay lower; the same
// seeds, traces and changes, as the build sees the same tree), and with userxattr (the Rust
// "userxattr"). The Rust test's redirect, metacopy and index configurations reach the
// snapshotter only as extra mount options (overlay.WithMountOptions), which the Differ does
// not recognise: there it must walk, and the walk must write the walking differ's layer.
// OVERLAY_SEEDS=N runs N seeds per configuration; OVERLAY_ONLY=config:seed runs one;
// OVERLAY_TRACE_DIR=DIR writes each traced seed's generator trace there.
func TestDifferUpperdirSeeds(t *testing.T) {
	testkit.RequireRoot(t, needsRoot)
	for _, p := range []string{"redirect_dir", "metacopy"} {
		// The default configuration stands for the Rust "plain" one (both off) only when the
		// kernel's defaults are off; otherwise the traces cannot match.
		if v, err := os.ReadFile("/sys/module/overlay/parameters/" + p); err == nil && strings.TrimSpace(string(v)) != "N" {
			t.Logf("overlay's default %s is %q here, not N: the default configuration is not the Rust \"plain\" one", p, strings.TrimSpace(string(v)))
		}
	}
	pinned := pinnedTraces(t)
	seeds := overlaySeeds(t)
	only := os.Getenv("OVERLAY_ONLY")
	for _, cfg := range []struct {
		name, rust string
		layers     int // of the lower
		opts       []overlay.Opt
		mayRefuse  []string
	}{
		{"default", "plain", 1, nil, []string{"hardlinked copy-up"}},
		// The lower tree built across two layers (half of its entries in each, through an
		// overlay): the lower is then a read-only overlay, the upper's lowerdir a stack.
		{"default-2layers", "plain", 2, nil, []string{"hardlinked copy-up"}},
		// The Rust "plain" mount's options spelled out: they mean the default, so the Differ
		// must still take the fast path.
		{"explicit-off", "plain", 1, mountOptions("redirect_dir=off,metacopy=off,index=off"), []string{"hardlinked copy-up"}},
		{"userxattr", "userxattr", 1, []overlay.Opt{overlay.WithMountOptions([]string{"userxattr"})}, []string{"hardlinked copy-up"}},
		// The Rust test's other mounts, as extra mount options: the Differ does not know
		// them, so it must always walk, and still write the walking differ's layer.
		{"redirect", "redirect", 1, mountOptions("redirect_dir=on,metacopy=off,index=off"), []string{walkOnly}},
		{"metacopy", "metacopy", 1, mountOptions("redirect_dir=on,metacopy=on,index=off"), []string{walkOnly}},
		{"index", "index", 1, mountOptions("redirect_dir=off,metacopy=off,index=on"), []string{walkOnly}},
	} {
		var ran, fast, fellBack int
		var example string
		traced := 0
		for seed := uint64(0); seed < seeds; seed++ {
			if only != "" && only != fmt.Sprintf("%s:%d", cfg.name, seed) {
				continue
			}
			t.Run(fmt.Sprintf("%s/%d", cfg.name, seed), func(t *testing.T) {
				ran++
				g := overlayops.New(cfg.rust, seed)
				lower, upper := seedSnapshots(t, g, cfg.layers, cfg.opts)
				sde := g.SourceDateEpoch()
				if want, ok := pinned[fmt.Sprintf("%s %d", cfg.rust, seed)]; ok {
					traced++
					checkTrace(t, g.Trace(), cfg.rust, seed, want)
				}
				var opts []diff.Opt
				if sde {
					tm := time.Unix(1_650_000_000, 0)
					opts = append(opts, diff.WithSourceDateEpoch(&tm))
				}
				ours, theirs, took, reason := diffIDsAgree(t, lower, upper, opts...)
				if !bytes.Equal(ours, theirs) {
					t.Fatalf("layers differ (ours %d bytes, walking %d bytes, upperdir path %v %s)\nours:    %q\nwalking: %q",
						len(ours), len(theirs), took, reason, tarNames(ours), tarNames(theirs))
				}
				if took {
					fast++
					return
				}
				for _, r := range cfg.mayRefuse {
					if strings.Contains(reason, r) {
						fellBack++
						example = reason
						return
					}
				}
				t.Fatalf("fell back for a reason the Rust %q configuration does not allow: %s", cfg.rust, reason)
			})
		}
		t.Logf("%s: %d seeds, %d by the upperdir, %d fell back (e.g. %s); %d traces matched the Rust generator's",
			cfg.name, ran, fast, fellBack, example, traced)
		if cfg.mayRefuse[0] == walkOnly {
			if fast > 0 {
				t.Errorf("%s: %d seeds took the upperdir path on mounts the Differ does not know", cfg.name, fast)
			}
		} else if ran >= 20 && fast == 0 {
			// With a handful of seeds all may fall back; the default number never does.
			t.Errorf("%s: no seed took the upperdir path", cfg.name)
		}
	}
}

// walkOnly is the Differ's reason for walking mounts with options it does not recognise.
const walkOnly = "overlay mount option"

// mountOptions is the snapshotter option adding a Rust configuration's mount options.
func mountOptions(options string) []overlay.Opt {
	return []overlay.Opt{overlay.WithMountOptions(strings.Split(options, ","))}
}

// seedSnapshots builds the seed's lower tree in committed snapshots of containerd's overlay
// snapshotter (layers of them, each holding a share of the tree's entries), prepares an
// active snapshot on it, runs the seed's operations through its mounted merged view, and
// returns the mounts of a read-only view of the lower and of the active snapshot (what a
// commit diffs).
func seedSnapshots(t *testing.T, g *overlayops.Gen, layers int, opts []overlay.Opt) (lower, upper []mount.Mount) {
	ctx := context.Background()
	sn, err := overlay.NewSnapshotter(t.TempDir(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sn.Close() })
	parent, root, layer := "", "", -1
	commit := func() error {
		if err := mount.UnmountAll(root, 0); err != nil {
			return err
		}
		key := fmt.Sprintf("layer%d", layer)
		parent = key
		return sn.Commit(ctx, key, key+"-active")
	}
	must(t, g.BuildLowerIn(func(i, n uint64) (string, error) {
		if l := int(i * uint64(layers) / n); l != layer {
			if layer >= 0 {
				if err := commit(); err != nil {
					return "", err
				}
			}
			layer = l
			mounts, err := sn.Prepare(ctx, fmt.Sprintf("layer%d-active", l), parent)
			if err != nil {
				return "", err
			}
			root = t.TempDir()
			if err := mount.All(mounts, root); err != nil {
				return "", err
			}
			r := root
			t.Cleanup(func() { _ = mount.UnmountAll(r, 0) }) // if the build fails

		}
		return root, nil
	}))
	must(t, commit())
	if lower, err = sn.View(ctx, "lower-view", parent); err != nil {
		t.Fatal(err)
	}
	if upper, err = sn.Prepare(ctx, "container", parent); err != nil {
		t.Fatal(err)
	}
	// nodev: operation 0 may open a character device it made (1:x) for writing; it must not
	// reach the device. The nodes themselves, and so the layer, are the same either way.
	changing := []mount.Mount{upper[0]}
	changing[0].Options = append(append([]string{}, upper[0].Options...), "nodev")
	withMounted(t, changing, func(root string) {
		for n := g.OpCount(); n > 0; n-- {
			g.RandomOp(root)
		}
	})
	return lower, upper
}

// checkTrace asserts the generator's trace hash against the Rust generator's pinned one.
func checkTrace(t *testing.T, lines []string, config string, seed uint64, want string) {
	t.Helper()
	got := overlayops.TraceSHA256(lines)
	if dir := os.Getenv("OVERLAY_TRACE_DIR"); dir != "" {
		must(t, os.WriteFile(filepath.Join(dir, fmt.Sprintf("go-%s-%d.trace", config, seed)), []byte(strings.Join(lines, "\n")+"\n"), 0o644))
	}
	if got != want {
		t.Fatalf("the Go generator's trace (%s) is not the Rust generator's (%s pins %s) for %s seed %d: "+
			"rerun both with OVERLAY_TRACE_DIR=DIR and diff the traces", got, overlayTraces, want, config, seed)
	}
}

// diffIDsAgree runs Differ.Compare and containerd's walking differ on the same mounts and
// returns both uncompressed layers after checking that each blob's diffID label is the
// SHA-256 of its uncompressed bytes and that the two diffIDs are equal; took and reason are
// the Differ's upperdir decision.
func diffIDsAgree(t *testing.T, lower, upper []mount.Mount, opts ...diff.Opt) (ours, theirs []byte, took bool, reason string) {
	t.Helper()
	calls := 0
	upperdirCompareHook = func(fast bool, why string) { calls++; took, reason = fast, why }
	defer func() { upperdirCompareHook = nil }()
	var ids [2]string
	var layers [2][]byte
	for i, differ := range []func(content.Store) diff.Comparer{
		func(cs content.Store) diff.Comparer { return NewDiffer(cs) },
		func(cs content.Store) diff.Comparer { return walking.NewWalkingDiff(cs) },
	} {
		ctx, cs := testkit.ContentStore(t)
		d := differ(cs)
		desc, err := d.Compare(ctx, lower, upper, opts...)
		if err != nil {
			t.Fatalf("%T.Compare: %v", d, err)
		}
		layers[i] = uncompressed(t, ctx, cs, desc)
		ids[i] = blobLabels(t, ctx, cs, desc.Digest)[labels.LabelUncompressed]
		if want := digest.FromBytes(layers[i]).String(); ids[i] != want {
			t.Fatalf("%T: diffID label %s, uncompressed layer %s", d, ids[i], want)
		}
	}
	if calls != 1 {
		t.Fatalf("the upperdir decision was reported %d times, not once", calls)
	}
	if ids[0] != ids[1] {
		t.Errorf("diffID %s (layerdiff, upperdir path %v %s) != %s (containerd's walking differ)", ids[0], took, reason, ids[1])
	}
	return layers[0], layers[1], took, reason
}

// tarNames lists an uncompressed layer's entries (name, type, size, mode, link) for failure
// messages.
func tarNames(layer []byte) []string {
	var out []string
	tr := tar.NewReader(bytes.NewReader(layer))
	for {
		h, err := tr.Next()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				out = append(out, "error: "+err.Error())
			}
			return out
		}
		out = append(out, fmt.Sprintf("%s %c %d %o %s", h.Name, h.Typeflag, h.Size, h.Mode, h.Linkname))
	}
}
