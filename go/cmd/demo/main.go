// Command demo runs layerdiff's main job end to end, next to containerd's own differ:
//
//  1. generate two sample trees (a rootfs-like lower, and an upper that changes it);
//  2. Compare them through the layerdiff Differ into a real containerd content store
//     (content/local under the bolt metadata DB), and through containerd's walking differ;
//  3. Apply the layer through the layerdiff Differ onto a copy of lower (bind mount) and
//     onto an empty overlay upperdir over lower (overlay mount), and through containerd's
//     fs applier;
//  4. print the descriptors, check every result tree equals upper, and show the times.
//
// It needs root (mounts, chown, mknod).
package main

import (
	"context"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/diff"
	"github.com/containerd/containerd/v2/core/diff/apply"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/pkg/labels"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/plugins/diff/walking"
	"github.com/containerd/log"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"

	layerdiff "github.com/layerdiff/layerdiff/go"
	"github.com/layerdiff/layerdiff/go/internal/fixture"
	"github.com/layerdiff/layerdiff/go/internal/randtree"
	"github.com/layerdiff/layerdiff/go/internal/treecmp"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo: FAILED:", err)
		os.Exit(1)
	}
}

func run() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root: it mounts (bind, overlay), chowns and makes device nodes")
	}
	// containerd logs every temp mount at info; keep the demo's output readable.
	_ = log.SetLevel("error")

	work, err := os.MkdirTemp("", "layerdiff-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	// A tmpfs keeps the timings about the software, not about this machine's disk writeback.
	onTmpfs := unix.Mount("tmpfs", work, "tmpfs", 0, "size=4g,mode=0755") == nil
	if onTmpfs {
		defer unix.Unmount(work, unix.MNT_DETACH)
	}
	dir := func(name string) string {
		p := filepath.Join(work, name)
		must(os.MkdirAll(p, 0o755))
		return p
	}

	fmt.Printf("layerdiff %s demo (work dir %s)\n\n", layerdiff.Version(), work)
	lower, upper := dir("lower"), dir("upper")
	start := time.Now()
	files, bytesWritten := generateLower(lower)
	if err := fixture.CopyTree(lower, upper); err != nil {
		return err
	}
	changes := changeUpper(upper)
	fmt.Printf("sample trees: lower %d files, %.1f MB; upper = lower + %d changes (generated in %v)\n\n",
		files, float64(bytesWritten)/1e6, changes, time.Since(start).Round(time.Millisecond))

	// A real containerd content store: content/local under the bolt metadata DB.
	db, closeDB, err := fixture.OpenStore(dir("store"))
	if err != nil {
		return err
	}
	defer closeDB()
	cs := db.ContentStore()
	ctx := namespaces.WithNamespace(context.Background(), "layerdiff-demo")

	lowerMount := []mount.Mount{{Type: "bind", Source: lower, Options: []string{"rbind", "ro"}}}
	upperMount := []mount.Mount{{Type: "bind", Source: upper, Options: []string{"rbind", "ro"}}}
	differ := layerdiff.NewDiffer(cs)

	// Compare.
	t0 := time.Now()
	ours, err := differ.Compare(ctx, lowerMount, upperMount, diff.WithMediaType(ocispec.MediaTypeImageLayerGzip), diff.WithReference("demo-layerdiff"))
	if err != nil {
		return fmt.Errorf("layerdiff Compare: %w", err)
	}
	ourCompare := time.Since(t0)
	t0 = time.Now()
	theirs, err := walking.NewWalkingDiff(cs).Compare(ctx, lowerMount, upperMount, diff.WithMediaType(ocispec.MediaTypeImageLayerGzip), diff.WithReference("demo-walking"))
	if err != nil {
		return fmt.Errorf("containerd walking Compare: %w", err)
	}
	theirCompare := time.Since(t0)
	ourDiffID, err := uncompressedLabel(ctx, cs, ours)
	if err != nil {
		return err
	}
	theirDiffID, err := uncompressedLabel(ctx, cs, theirs)
	if err != nil {
		return err
	}
	fmt.Println("Compare (tar+gzip) into the content store:")
	printDesc("layerdiff ", ours, ourDiffID)
	printDesc("containerd", theirs, theirDiffID)
	if ourDiffID != theirDiffID {
		return fmt.Errorf("diffIDs differ: layerdiff %s, containerd %s", ourDiffID, theirDiffID)
	}
	fmt.Println("  same diffID: the uncompressed layers are byte-identical")
	fmt.Println()

	// Apply onto a copy of lower through a bind mount, with both appliers.
	ourRoot, theirRoot := dir("apply-layerdiff"), dir("apply-containerd")
	must(fixture.CopyTree(lower, ourRoot))
	must(fixture.CopyTree(lower, theirRoot))
	t0 = time.Now()
	applied, err := differ.Apply(ctx, ours, []mount.Mount{{Type: "bind", Source: ourRoot, Options: []string{"rbind", "rw"}}})
	if err != nil {
		return fmt.Errorf("layerdiff Apply (bind): %w", err)
	}
	ourApply := time.Since(t0)
	t0 = time.Now()
	theirApplied, err := apply.NewFileSystemApplier(cs).Apply(ctx, ours, []mount.Mount{{Type: "bind", Source: theirRoot, Options: []string{"rbind", "rw"}}})
	if err != nil {
		return fmt.Errorf("containerd fs Apply (bind): %w", err)
	}
	theirApply := time.Since(t0)
	fmt.Println("Apply onto a copy of lower (bind mount):")
	printDesc("layerdiff ", applied, "")
	printDesc("containerd", theirApplied, "")
	if applied.Digest.String() != ourDiffID || theirApplied.Digest.String() != ourDiffID || applied.Size != theirApplied.Size {
		return fmt.Errorf("applied descriptors do not match the diffID %s", ourDiffID)
	}
	if err := sameTree(upper, ourRoot); err != nil {
		return fmt.Errorf("layerdiff-applied tree is not upper: %w", err)
	}
	if err := sameTree(upper, theirRoot); err != nil {
		return fmt.Errorf("containerd-applied tree is not upper: %w", err)
	}
	fmt.Println("  both applied trees equal upper")
	fmt.Println()

	// Apply onto an empty overlay upperdir over lower: the overlay shortcut.
	overlayUpper, overlayWork := dir("overlay-upper"), dir("overlay-work")
	overlay := []mount.Mount{{Type: "overlay", Source: "overlay", Options: []string{
		"lowerdir=" + lower, "upperdir=" + overlayUpper, "workdir=" + overlayWork,
	}}}
	t0 = time.Now()
	overlayApplied, err := differ.Apply(ctx, ours, overlay)
	if err != nil {
		return fmt.Errorf("layerdiff Apply (overlay): %w", err)
	}
	overlayTime := time.Since(t0)
	fmt.Printf("Apply into an overlay upperdir (overlay mount: overlay whiteouts, lowerdir as parent; %v):\n", overlayTime.Round(time.Millisecond))
	printDesc("layerdiff ", overlayApplied, "")
	err = mount.WithReadonlyTempMount(ctx, overlay, func(merged string) error {
		return sameTree(upper, merged)
	})
	if err != nil {
		return fmt.Errorf("merged overlay view is not upper: %w", err)
	}
	fmt.Println("  the merged overlay view equals upper")
	fmt.Println()

	// Timings: best of three, each implementation on the same input.
	where := "a tmpfs"
	if !onTmpfs {
		where = "disk (tmpfs mount failed)"
	}
	fmt.Printf("Time on %s, best of 3 (one run above each: compare %v vs %v, apply %v vs %v):\n",
		where, ourCompare.Round(time.Millisecond), theirCompare.Round(time.Millisecond), ourApply.Round(time.Millisecond), theirApply.Round(time.Millisecond))
	fmt.Printf("  %-34s %10s %10s %8s\n", "", "layerdiff", "containerd", "ratio")
	empty := dir("empty")
	emptyMount := []mount.Mount{{Type: "bind", Source: empty, Options: []string{"rbind", "ro"}}}
	comparers := []diff.Comparer{differ, walking.NewWalkingDiff(cs)}
	appliers := []diff.Applier{differ, apply.NewFileSystemApplier(cs)}
	var baseLayer ocispec.Descriptor
	for _, c := range []struct {
		name         string
		lower, upper []mount.Mount
	}{
		{"Compare tar+gzip, base layer", emptyMount, lowerMount},
		{"Compare tar+gzip, change layer", lowerMount, upperMount},
	} {
		var times [2]time.Duration
		for k, comparer := range comparers {
			var err error
			times[k], err = bestOf3(func() error {
				desc, err := comparer.Compare(ctx, c.lower, c.upper, diff.WithMediaType(ocispec.MediaTypeImageLayerGzip))
				if k == 1 && c.upper[0].Source == lower {
					baseLayer = desc
				}
				return err
			})
			if err != nil {
				return err
			}
		}
		printTimes(c.name, times)
	}
	var times [2]time.Duration
	for k, applier := range appliers {
		n := 0
		times[k], err = bestOf3(func() error {
			n++
			root := dir(fmt.Sprintf("timing-%d-%d", k, n))
			_, err := applier.Apply(ctx, baseLayer, []mount.Mount{{Type: "bind", Source: root, Options: []string{"rbind", "rw"}}})
			return err
		})
		if err != nil {
			return err
		}
	}
	printTimes("Apply base layer (bind)", times)
	fmt.Println("\ndemo: OK")
	return nil
}

// bestOf3 runs f three times and returns the shortest time.
func bestOf3(f func() error) (time.Duration, error) {
	best := time.Duration(1<<63 - 1)
	for i := 0; i < 3; i++ {
		start := time.Now()
		if err := f(); err != nil {
			return 0, err
		}
		best = min(best, time.Since(start))
	}
	return best, nil
}

func printTimes(name string, t [2]time.Duration) {
	fmt.Printf("  %-34s %10v %10v %7.1fx\n", name, t[0].Round(time.Millisecond), t[1].Round(time.Millisecond), t[1].Seconds()/t[0].Seconds())
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}

func uncompressedLabel(ctx context.Context, cs content.Store, desc ocispec.Descriptor) (string, error) {
	info, err := cs.Info(ctx, desc.Digest)
	if err != nil {
		return "", err
	}
	return info.Labels[labels.LabelUncompressed], nil
}

func printDesc(who string, d ocispec.Descriptor, diffID string) {
	fmt.Printf("  %s  %s  %s  %9d bytes", who, d.MediaType, d.Digest, d.Size)
	if diffID != "" {
		fmt.Printf("\n  %s  %s = %s", strings.Repeat(" ", len(who)), labels.LabelUncompressed, diffID)
	}
	fmt.Println()
}

func fileSize(rng *rand.Rand) int {
	switch r := rng.IntN(100); {
	case r < 70:
		return rng.IntN(8 << 10)
	case r < 95:
		return 8<<10 + rng.IntN(32<<10)
	default:
		return 100<<10 + rng.IntN(200<<10)
	}
}

// generateLower writes a rootfs-like tree: 2,000 files (~40 MB) in a few hundred directories, with
// symlinks, hardlinks and varied owners and modes.
func generateLower(root string) (files int, total int64) {
	rng := rand.New(rand.NewPCG(42, 7))
	for _, d := range []string{"bin", "etc", "usr/bin", "usr/lib", "usr/share/doc", "var/lib", "var/cache", "opt"} {
		must(os.MkdirAll(filepath.Join(root, d), 0o755))
	}
	for i := 0; i < 2000; i++ {
		top := []string{"usr/lib", "usr/share/doc", "usr/bin", "etc", "var/lib", "opt"}[rng.IntN(6)]
		d := filepath.Join(root, top, fmt.Sprintf("pkg%03d", rng.IntN(200)))
		must(os.MkdirAll(d, 0o755))
		p := filepath.Join(d, fmt.Sprintf("file%04d", i))
		data := randtree.Compressible(rng, fileSize(rng))
		must(os.WriteFile(p, data, []os.FileMode{0o644, 0o755, 0o600}[rng.IntN(3)]))
		if rng.IntN(10) == 0 {
			must(os.Lchown(p, rng.IntN(2000), rng.IntN(2000)))
		}
		files++
		total += int64(len(data))
		switch rng.IntN(40) {
		case 0:
			must(os.Symlink(filepath.Base(p), p+".link"))
		case 1:
			must(os.Link(p, p+".hard"))
		}
	}
	must(os.Symlink("usr/bin", filepath.Join(root, "bin/sbin")))
	return files, total
}

// changeUpper changes about 10% of the tree: rewrites, deletions, additions, chmods.
func changeUpper(root string) (changes int) {
	rng := rand.New(rand.NewPCG(7, 42))
	var paths []string
	must(filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			paths = append(paths, p)
		}
		return err
	}))
	for _, p := range paths {
		switch rng.IntN(30) {
		case 0:
			must(os.Remove(p))
		case 1:
			must(os.WriteFile(p, randtree.Compressible(rng, fileSize(rng)), 0o644))
		case 2:
			must(os.Chmod(p, 0o700))
		default:
			continue
		}
		changes++
	}
	must(os.RemoveAll(filepath.Join(root, "usr/share/doc")))
	must(os.MkdirAll(filepath.Join(root, "srv/new"), 0o750))
	for i := 0; i < 300; i++ {
		must(os.WriteFile(filepath.Join(root, "srv/new", fmt.Sprintf("added%03d", i)), randtree.Compressible(rng, fileSize(rng)), 0o644))
	}
	must(unix.Mknod(filepath.Join(root, "srv/new/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(unix.Mkfifo(filepath.Join(root, "srv/new/fifo"), 0o600))
	return changes + 303
}

// sameTree compares everything a layer carries: type, mode, owner, device, content,
// symlink target, mtime (seconds: a layer carries seconds), xattrs and hardlink groups;
// the root's own mode and times are the mount point's.
func sameTree(want, got string) error {
	diffs, err := treecmp.Compare(want, got, treecmp.Options{IgnoreRootMode: true, IgnoreRootTimes: true, MtimeSeconds: true})
	if err != nil {
		return err
	}
	if len(diffs) > 0 {
		n := len(diffs)
		if n > 10 {
			diffs = append(diffs[:10], fmt.Sprintf("... %d more", n-10))
		}
		return fmt.Errorf("%d differences:\n  %s", n, strings.Join(diffs, "\n  "))
	}
	return nil
}
