package main

// The commit job (-jobs commit, `make bench-commit`): what a `nerdctl commit` or a BuildKit
// export of a container costs. A rootfs-like base (-commit-bases FILES:MB[:LAYERS]) is written
// into committed snapshots of containerd's real overlayfs snapshotter; an active snapshot on it
// gets N changes (-commit-changes) through its overlay mount, which is then unmounted; then
// Differ.Compare(view of the base, the active snapshot's mounts) runs, as a commit does,
// through our Differ with the upperdir fast path (it reads only the upperdir), through our
// Differ with it off (WithUpperdirCompare(false): our double walk of both trees) and through
// containerd's walking differ. Each run is a fresh process timing Compare alone (wall and CPU
// time; the content store is opened and written to before); the runs are interleaved. Every
// run's diffID must be the same for the three, and the fast path must have been taken exactly
// where it should (our Differ's debug log says which path it took); any difference fails the
// bench. The upperdir runs then time the fast path's parts alone (upperdirBreakdown).

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/diff"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/labels"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/plugins/diff/walking"
	"github.com/containerd/containerd/v2/plugins/snapshots/overlay"
	"github.com/containerd/log"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"

	layerdiff "github.com/layerdiff/layerdiff/go"
	"github.com/layerdiff/layerdiff/go/internal/randtree"
)

const commitJob = "commit"

// commitImpls are the three ways the commit's diff is made; mode is what the child runs.
var commitImpls = []struct{ name, mode string }{
	{"layerdiff, upperdir", "upperdir"},
	{"layerdiff, double walk", "doublewalk"},
	{"containerd walking differ", "containerd"},
}

// The messages our Differ logs at debug level when it took, or did not take, the fast path.
const (
	upperdirTakenMsg  = "layerdiff: compared by reading the upperdir"
	upperdirFellBack  = "layerdiff: upperdir compare not used, walking both trees"
	upperdirTurnedOff = "turned off"
)

type commitResult struct {
	elapsed time.Duration // Compare alone, timed in the child
	cpu     time.Duration // the child's CPU time (user and system, all threads) in Compare
	wall    time.Duration // the child process from start to exit, timed here
	peakKB  int64
	size    int64 // the compressed layer
	usize   int64 // the uncompressed layer (tar)
	diffID  string
	// Only for the upperdir mode, timed after Compare in the same child (upperdirBreakdown).
	mountNS, coreNS, storeNS int64
}

type commitRow struct {
	fs, impl string
	base     string // commitSize.String()
	changes  int
	results  []commitResult
	failed   string
}

// commitSize is a base the commit job is run on (-commit-bases FILES:MB[:LAYERS]).
type commitSize struct{ files, mb, layers int }

func (c commitSize) String() string {
	if c.layers == 1 {
		return strconv.Itoa(c.files)
	}
	return fmt.Sprintf("%d in %d layers", c.files, c.layers)
}

type commitBase struct {
	fs                            string
	layers, files, dirs, symlinks int
	bytes                         int64
	genTime                       time.Duration
}

// benchCommit runs the commit job on one file system, for each base; base is its work
// directory.
func benchCommit(opts options, fsName, base string) ([]commitRow, []commitBase, error) {
	ctx := namespaces.WithNamespace(context.Background(), "layerdiff-bench")
	snRoot := filepath.Join(base, "snapshotter")
	sn, err := overlay.NewSnapshotter(snRoot)
	if err != nil {
		return nil, nil, fmt.Errorf("containerd's overlay snapshotter on %s: %v", snRoot, err)
	}
	defer sn.Close()
	var rows []commitRow
	var infos []commitBase
	for _, size := range opts.commitBases {
		baseRows, info, err := benchCommitBase(ctx, opts, sn, size, fsName, base)
		if err != nil {
			return nil, nil, err
		}
		rows, infos = append(rows, baseRows...), append(infos, info)
	}
	return rows, infos, nil
}

func benchCommitBase(ctx context.Context, opts options, sn snapshots.Snapshotter, size commitSize, fsName, base string) ([]commitRow, commitBase, error) {
	info := commitBase{fs: fsName}
	progress("%s commit: writing a %d-file, %d MB base in %d committed snapshots of containerd's overlay snapshotter", fsName, size.files, size.mb, size.layers)
	start := time.Now()
	var files, layerKeys []string
	baseKey := ""
	for layer := 0; layer < size.layers; layer++ {
		key := fmt.Sprintf("base-%d-%d-layer%d", size.files, size.layers, layer)
		mounts, err := sn.Prepare(ctx, key+"-active", baseKey)
		if err != nil {
			return nil, info, err
		}
		if err := withMount(base, mounts, func(root string) error {
			files, err = writeCommitBase(root, size.files, int64(size.mb)<<20, layer, size.layers, &info)
			return err
		}); err != nil {
			return nil, info, fmt.Errorf("writing the base: %v", err)
		}
		if err := sn.Commit(ctx, key, key+"-active"); err != nil {
			return nil, info, err
		}
		baseKey = key
		layerKeys = append(layerKeys, key)
	}
	info.layers = size.layers
	info.genTime = time.Since(start)
	lower, err := sn.View(ctx, baseKey+"-view", baseKey)
	if err != nil {
		return nil, info, err
	}
	progress("%s commit: base written in %.1f s: %d files, %d dirs, %d symlinks, %.0f MB; lower view %s",
		fsName, info.genTime.Seconds(), info.files, info.dirs, info.symlinks, float64(info.bytes)/1e6, mountsText(lower))

	var rows []commitRow
	for _, n := range opts.commitChanges {
		key := fmt.Sprintf("%s-container-%d", baseKey, n)
		upper, err := sn.Prepare(ctx, key, baseKey, snapshots.WithLabels(map[string]string{}))
		if err != nil {
			return nil, info, err
		}
		var summary string
		if err := withMount(base, upper, func(root string) error {
			summary, err = applyCommitChanges(rand.New(rand.NewPCG(21, uint64(n))), root, files, n)
			return err
		}); err != nil {
			return nil, info, fmt.Errorf("applying %d changes: %v", n, err)
		}
		progress("%s commit: %d changes (%s) through %s", fsName, n, summary, mountsText(upper))

		jobRows := make([]commitRow, len(commitImpls))
		for k, im := range commitImpls {
			jobRows[k] = commitRow{fs: fsName, impl: im.name, base: size.String(), changes: n}
		}
		wantDiffID, failed := "", false
		for r := 0; r < opts.runs; r++ {
			for i := range commitImpls {
				k := (i + r) % len(commitImpls)
				if jobRows[k].failed != "" {
					continue
				}
				res, err := runCommitOnce(commitImpls[k].mode, base, lower, upper, fsName == "disk")
				if err == nil && wantDiffID != "" && res.diffID != wantDiffID {
					err = fmt.Errorf("diffID %s differs from %s (an earlier run's): the layers are not the same", res.diffID, wantDiffID)
				}
				if err != nil {
					jobRows[k].failed = "FAILED: " + firstLine(err.Error())
					fmt.Fprintf(os.Stderr, "bench: FAILED %s commit %s files %d changes (%s): %v\n", fsName, size, n, commitImpls[k].name, err)
					failures++
					failed = true
					continue
				}
				wantDiffID = res.diffID
				progress("%s commit %s files %4d changes %-26s run %d: %.4f s (process %.3f s)", fsName, size, n, commitImpls[k].name, r+1, res.elapsed.Seconds(), res.wall.Seconds())
				jobRows[k].results = append(jobRows[k].results, res)
			}
		}
		if !failed {
			progress("%s commit %s files %d changes: every run's diffID is %s", fsName, size, n, wantDiffID)
		}
		rows = append(rows, jobRows...)
		if err := sn.Remove(ctx, key); err != nil {
			return nil, info, err
		}
	}
	// The next base needs the room (a tmpfs).
	slices.Reverse(layerKeys)
	for _, key := range append([]string{baseKey + "-view"}, layerKeys...) {
		if err := sn.Remove(ctx, key); err != nil {
			return nil, info, err
		}
	}
	if c, ok := sn.(interface{ Cleanup(context.Context) error }); ok {
		if err := c.Cleanup(ctx); err != nil {
			return nil, info, err
		}
	}
	return rows, info, nil
}

// withMount mounts mounts on a fresh directory under base for f, and unmounts them after.
func withMount(base string, mounts []mount.Mount, f func(root string) error) error {
	root, err := os.MkdirTemp(base, "mnt-")
	if err != nil {
		return err
	}
	defer os.Remove(root)
	if err := mount.All(mounts, root); err != nil {
		return err
	}
	ferr := f(root)
	if err := mount.UnmountAll(root, 0); err != nil && ferr == nil {
		ferr = err
	}
	return ferr
}

func mountsText(ms []mount.Mount) string {
	parts := make([]string, len(ms))
	for i, m := range ms {
		opts := make([]string, 0, len(m.Options))
		for _, o := range m.Options {
			// The paths are long and say nothing here; the option names are what matters.
			key, _, hasValue := strings.Cut(o, "=")
			if hasValue && strings.Contains(o, "/") {
				o = key + "=…"
			}
			opts = append(opts, o)
		}
		parts[i] = m.Type + " (" + strings.Join(opts, ",") + ")"
	}
	return strings.Join(parts, " + ")
}

// baseLeafFiles is how many files a leaf directory of the base holds.
const baseLeafFiles = 20

// writeCommitBase writes layer (of layers) of a rootfs-like tree under root: of files
// regular files of about total bytes together, the i-th when i%layers == layer, so that every
// directory is in every layer (the lower view then merges them all). A leaf directory holds
// baseLeafFiles files and one symlink, three levels deep (dNN/sNN/pNN); a tenth of the files
// are executable. Sizes are log-normal (median 1.5 KB, sigma 1.4, at most 8 MB: mostly small
// files and a long tail, as in a distribution's /usr) scaled so that they add up to total;
// contents compress like real files (randtree.Compressible). Each file is drawn from its own
// seeded generator, so the tree is the same however it is split. It returns every file's
// path relative to the top, the layers' merged view.
func writeCommitBase(root string, files int, total int64, layer, layers int, info *commitBase) ([]string, error) {
	const seed = 11
	sizeRNG := rand.New(rand.NewPCG(seed, math.MaxUint64))
	sizes := make([]float64, files)
	var sum float64
	for i := range sizes {
		sizes[i] = math.Min(1536*math.Exp(1.4*sizeRNG.NormFloat64()), 8<<20)
		sum += sizes[i]
	}
	scale := float64(total) / sum
	paths := make([]string, files)
	for i := range paths {
		leaf := i / baseLeafFiles
		dir := fmt.Sprintf("d%02d/s%02d/p%02d", leaf/256, leaf/16%16, leaf%16)
		paths[i] = fmt.Sprintf("%s/f%06d", dir, i)
		if i%baseLeafFiles == 0 {
			if err := os.MkdirAll(filepath.Join(root, dir), 0o755); err != nil {
				return nil, err
			}
			if layer == 0 {
				info.dirs++
			}
		}
		if i%layers != layer {
			continue
		}
		rng := rand.New(rand.NewPCG(seed, uint64(i)))
		mode := os.FileMode(0o644)
		if rng.IntN(10) == 0 {
			mode = 0o755
		}
		size := int(sizes[i] * scale)
		if err := os.WriteFile(filepath.Join(root, paths[i]), randtree.Compressible(rng, size), mode); err != nil {
			return nil, err
		}
		if err := os.Chmod(filepath.Join(root, paths[i]), mode); err != nil { // past the umask
			return nil, err
		}
		info.files++
		info.bytes += int64(size)
		if i%baseLeafFiles == 1 {
			if err := os.Symlink(filepath.Base(paths[i]), filepath.Join(root, dir, "link")); err != nil {
				return nil, err
			}
			info.symlinks++
		}
	}
	if layer == 0 {
		// MkdirAll counts only the leaves above; the dNN and dNN/sNN directories too.
		info.dirs += (files/baseLeafFiles+255)/256 + (files/baseLeafFiles+15)/16
	}
	return paths, nil
}

// applyCommitChanges makes n changes under root (the container's merged view), as a
// container would: one leaf directory deleted (rm -rf), one chmod, and then, of the rest,
// about 4 of 8 files modified (rewritten, another size), 3 of 8 added and 1 of 8 deleted.
// It returns what it did.
func applyCommitChanges(rng *rand.Rand, root string, files []string, n int) (string, error) {
	if n < 3 {
		return "", fmt.Errorf("-commit-changes %d: at least 3 (a deleted dir, a chmod, a file)", n)
	}
	order := rng.Perm(len(files))
	deadDir := filepath.Dir(files[order[0]])
	if err := os.RemoveAll(filepath.Join(root, deadDir)); err != nil {
		return "", err
	}
	next := 1
	pick := func() string {
		for ; next < len(order); next++ {
			if p := files[order[next]]; filepath.Dir(p) != deadDir {
				next++
				return p
			}
		}
		panic("out of files")
	}
	if err := os.Chmod(filepath.Join(root, pick()), 0o600); err != nil {
		return "", err
	}
	rest := n - 2
	modified := (rest*4 + 4) / 8
	added := (rest*3 + 4) / 8
	if modified+added > rest {
		added = rest - modified
	}
	deleted := rest - modified - added
	for i := 0; i < modified; i++ {
		size := int(math.Min(1536*math.Exp(1.4*rng.NormFloat64()), 1<<20))
		if err := os.WriteFile(filepath.Join(root, pick()), randtree.Compressible(rng, size), 0o644); err != nil {
			return "", err
		}
	}
	for i := 0; i < added; i++ {
		size := int(math.Min(1536*math.Exp(1.4*rng.NormFloat64()), 1<<20))
		p := filepath.Join(root, filepath.Dir(pick()), fmt.Sprintf("new%05d", i))
		if err := os.WriteFile(p, randtree.Compressible(rng, size), 0o644); err != nil {
			return "", err
		}
	}
	for i := 0; i < deleted; i++ {
		if err := os.Remove(filepath.Join(root, pick())); err != nil {
			return "", err
		}
	}
	return fmt.Sprintf("%d modified, %d added, %d deleted files, 1 chmod, 1 deleted dir of %d files", modified, added, deleted, baseLeafFiles), nil
}

// runCommitOnce runs one mode once in a fresh child, with a fresh content store under a
// scratch directory that is removed after it (untimed), as runOnce does.
func runCommitOnce(mode, base string, lower, upper []mount.Mount, onDisk bool) (commitResult, error) {
	scratch, cleanup, err := scratchDir(base, onDisk)
	if err != nil {
		return commitResult{}, err
	}
	defer cleanup()
	specJSON, _ := json.Marshal(childSpec{Impl: mode, Job: commitJob, Work: scratch, Lower: lower, Upper: upper})
	self, err := os.Executable()
	if err != nil {
		return commitResult{}, err
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), childEnv+"="+string(specJSON))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	out, err := cmd.Output()
	wall := time.Since(start)
	if err != nil {
		return commitResult{}, fmt.Errorf("%v: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	var rep childReport
	if err := json.Unmarshal(out, &rep); err != nil {
		return commitResult{}, fmt.Errorf("child's report %q: %v", out, err)
	}
	// The breakdown's extra work is not the commit's.
	wall -= time.Duration(rep.BreakdownNS)
	return commitResult{elapsed: time.Duration(rep.ElapsedNS), cpu: time.Duration(rep.CPUNS), wall: wall, peakKB: rep.PeakKB, size: rep.OutSize,
		usize: rep.UncompressedSize, diffID: rep.DiffID, mountNS: rep.MountNS, coreNS: rep.CoreNS, storeNS: rep.StoreNS}, nil
}

// pathLog records what our Differ logs at debug level about the path it took (a logrus
// hook: containerd's log.Entry and log.Level are logrus's).
type pathLog struct{ taken, fellBack []string }

func (h *pathLog) Levels() []log.Level { return []log.Level{log.DebugLevel} }

func (h *pathLog) Fire(e *log.Entry) error {
	switch e.Message {
	case upperdirTakenMsg:
		h.taken = append(h.taken, fmt.Sprint(e.Data["upperdir"]))
	case upperdirFellBack:
		h.fellBack = append(h.fellBack, fmt.Sprint(e.Data["reason"]))
	}
	return nil
}

// commitChild is a child's run of the commit job: Compare(lower, upper) as gzip, timed alone,
// and the diffID of the layer it stored. It checks from our Differ's debug log that the
// upperdir mode took the fast path and the double walk did not.
func commitChild(ctx context.Context, spec childSpec, cs content.Store) (childReport, error) {
	var rep childReport
	paths := &pathLog{}
	logger := log.L.Logger
	logger.SetOutput(io.Discard)
	logger.AddHook(paths)
	if err := log.SetLevel("debug"); err != nil {
		return rep, err
	}
	var comparer diff.Comparer
	switch spec.Impl {
	case "upperdir":
		comparer = layerdiff.NewDiffer(cs)
	case "doublewalk":
		comparer = layerdiff.NewDiffer(cs, layerdiff.WithUpperdirCompare(false))
	case "containerd":
		comparer = walking.NewWalkingDiff(cs)
	default:
		return rep, fmt.Errorf("unknown commit mode %q", spec.Impl)
	}
	// A daemon's content store has been written to before: the first write's creation of
	// the metadata buckets is not the commit's (it is tens of ms on a disk).
	warm := []byte("warm-up")
	if err := content.WriteBlob(ctx, cs, "bench-warm-up", bytes.NewReader(warm),
		ocispec.Descriptor{Digest: digest.FromBytes(warm), Size: int64(len(warm))}); err != nil {
		return rep, err
	}
	cpu0, err := cpuTime()
	if err != nil {
		return rep, err
	}
	start := time.Now()
	desc, err := comparer.Compare(ctx, spec.Lower, spec.Upper, diff.WithMediaType(ocispec.MediaTypeImageLayerGzip))
	rep.ElapsedNS = int64(time.Since(start))
	if err != nil {
		return rep, err
	}
	cpu1, err := cpuTime()
	if err != nil {
		return rep, err
	}
	rep.CPUNS = int64(cpu1 - cpu0)
	rep.OutSize = desc.Size
	info, err := cs.Info(ctx, desc.Digest)
	if err != nil {
		return rep, err
	}
	rep.DiffID = info.Labels[labels.LabelUncompressed]
	if rep.DiffID == "" {
		return rep, fmt.Errorf("the layer %s has no %s label", desc.Digest, labels.LabelUncompressed)
	}
	switch spec.Impl {
	case "upperdir":
		if len(paths.taken) != 1 || len(paths.fellBack) != 0 {
			return rep, fmt.Errorf("the upperdir fast path was not taken (our Differ logged: taken %q, fell back because %q)", paths.taken, paths.fellBack)
		}
	case "doublewalk":
		if len(paths.taken) != 0 || !slices.Equal(paths.fellBack, []string{upperdirTurnedOff}) {
			return rep, fmt.Errorf("the double walk was not what ran (our Differ logged: taken %q, fell back because %q)", paths.taken, paths.fellBack)
		}
	}
	if spec.Impl == "upperdir" {
		start := time.Now()
		if err := upperdirBreakdown(ctx, spec, cs, &rep); err != nil {
			return rep, err
		}
		rep.BreakdownNS = int64(time.Since(start))
	}
	rep.PeakKB, err = vmHWM()
	return rep, err
}

// cpuTime is this process's CPU time so far, user and system, of all its threads (the
// core's included): on a machine shared with other jobs, the cost that waiting for a core
// does not inflate.
func cpuTime() (time.Duration, error) {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0, err
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

// upperdirBreakdown times, after the timed Compare, the parts of the fast path on their own:
// the read-only temp mount and unmount of the lower view; the core's upperdir compare (gzip,
// into io.Discard) on that mount; and the content store's part, as writeDiff does it (a
// writer, the layer's size of bytes, a commit with the diffID label, an Info), with bytes of
// another digest. The rest is the Go side of the compare (the pipe from the core to the
// writer, the digest check).
func upperdirBreakdown(ctx context.Context, spec childSpec, cs content.Store, rep *childReport) error {
	blob := make([]byte, rep.OutSize)
	_, _ = crand.Read(blob)
	blobDesc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromBytes(blob), Size: rep.OutSize}
	start := time.Now()
	if err := content.WriteBlob(ctx, cs, "bench-store-write", bytes.NewReader(blob), blobDesc,
		content.WithLabels(map[string]string{labels.LabelUncompressed: rep.DiffID})); err != nil {
		return err
	}
	if _, err := cs.Info(ctx, blobDesc.Digest); err != nil {
		return err
	}
	rep.StoreNS = int64(time.Since(start))

	start = time.Now()
	if err := mount.WithReadonlyTempMount(ctx, spec.Lower, func(string) error { return nil }); err != nil {
		return err
	}
	rep.MountNS = int64(time.Since(start))
	upperdir := ""
	for _, o := range spec.Upper[0].Options {
		if v, ok := strings.CutPrefix(o, "upperdir="); ok {
			upperdir = v
		}
	}
	xattrs := layerdiff.OverlayXattrsTrusted
	if slices.Contains(spec.Upper[0].Options, "userxattr") {
		xattrs = layerdiff.OverlayXattrsUser
	}
	return mount.WithReadonlyTempMount(ctx, spec.Lower, func(lowerRoot string) error {
		start := time.Now()
		res, err := layerdiff.CompareUpperdir(ctx, lowerRoot, upperdir, xattrs, io.Discard, layerdiff.CompareOptions{Compression: layerdiff.CompressionGzip})
		rep.CoreNS = int64(time.Since(start))
		if err == nil && res.DiffID.String() != rep.DiffID {
			err = fmt.Errorf("the core's upperdir compare gave diffID %s, Differ.Compare %s", res.DiffID, rep.DiffID)
		}
		rep.UncompressedSize = res.UncompressedSize
		return err
	})
}

// printCommitTable prints the commit job's table: per file system and number of changes,
// each way's median Compare time, its spread, containerd's and our double walk's time over
// the upperdir path's, the child process's wall time, peak RSS and the layer's size; then
// the fast path's breakdown.
func printCommitTable(w io.Writer, rows []commitRow, bases []commitBase, runs int) {
	for _, b := range bases {
		fmt.Fprintf(w, "commit base on %s: %d files, %d dirs, %d symlinks, %.0f MB, %d layer(s), written in %.1f s (in the page cache since: warm)\n",
			b.fs, b.files, b.dirs, b.symlinks, float64(b.bytes)/1e6, b.layers, b.genTime.Seconds())
	}
	fmt.Fprintf(w, "medians of %d runs of Differ.Compare (gzip) alone; \"x upperdir\" is the time over the upperdir path's;\n", runs)
	fmt.Fprintln(w, "\"CPU\" is the child's CPU time (user+system, all threads) in Compare, which waiting for a core on a loaded")
	fmt.Fprintln(w, "machine does not inflate; \"process\" is the child's whole life (exec, Go start, opening the content store,")
	fmt.Fprintln(w, "Compare, exit; for the upperdir path less the breakdown below)")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| fs | base files | changes | implementation | median | min – max | x upperdir | CPU | x CPU | process | peak RSS | layer (gz) |")
	fmt.Fprintln(w, "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	var fastMedian, fastCPU float64
	for _, r := range rows {
		if r.impl == commitImpls[0].name {
			fastMedian, fastCPU = 0, 0 // a new case: its own upperdir row, if that did not fail
		}
		if r.failed != "" || len(r.results) == 0 {
			fmt.Fprintf(w, "| %s | %s | %d | %s | %s | | | | | | | |\n", r.fs, r.base, r.changes, r.impl, r.failed)
			continue
		}
		secs, cpus, walls := make([]float64, len(r.results)), make([]float64, len(r.results)), make([]float64, len(r.results))
		var peak int64
		for i, res := range r.results {
			secs[i], cpus[i], walls[i] = res.elapsed.Seconds(), res.cpu.Seconds(), res.wall.Seconds()
			peak = max(peak, res.peakKB)
		}
		med, cpu := median(secs), median(cpus)
		ratio, cpuRatio := "?", "?"
		if r.impl == commitImpls[0].name {
			ratio, cpuRatio = "1", "1"
			fastMedian, fastCPU = med, cpu
		} else if fastMedian > 0 && fastCPU > 0 {
			ratio, cpuRatio = fmt.Sprintf("%.0f", med/fastMedian), fmt.Sprintf("%.0f", cpu/fastCPU)
		}
		fmt.Fprintf(w, "| %s | %s | %d | %s | %s | %s – %s | %s | %s | %s | %s | %.1f MB | %s |\n", r.fs, r.base, r.changes, r.impl, secsText(med),
			secsText(slices.Min(secs)), secsText(slices.Max(secs)), ratio, secsText(cpu), cpuRatio, secsText(median(walls)), float64(peak)/1024, sizeText(r.results[0].size))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "the upperdir path's parts, each timed alone in the same child after Compare (medians): the lower view's")
	fmt.Fprintln(w, "read-only temp mount and unmount; the core's upperdir compare (gzip) into io.Discard; the content store's")
	fmt.Fprintln(w, "writer, write, commit with labels and Info for a blob of the layer's size; the rest of Compare")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| fs | base files | changes | Compare | mount lower | core compare | store write | rest | tar |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		if r.impl != commitImpls[0].name || len(r.results) == 0 {
			continue
		}
		var total, mnt, core, store []float64
		for _, res := range r.results {
			total = append(total, res.elapsed.Seconds())
			mnt = append(mnt, float64(res.mountNS)/1e9)
			core = append(core, float64(res.coreNS)/1e9)
			store = append(store, float64(res.storeNS)/1e9)
		}
		rest := median(total) - median(mnt) - median(core) - median(store)
		fmt.Fprintf(w, "| %s | %s | %d | %s | %s | %s | %s | %s | %s |\n", r.fs, r.base, r.changes, secsText(median(total)), secsText(median(mnt)),
			secsText(median(core)), secsText(median(store)), secsText(max(0, rest)), sizeText(r.results[0].usize))
	}
}

// secsText prints a time in ms below a second, else in s.
func secsText(s float64) string {
	if s < 1 {
		return strconv.FormatFloat(s*1000, 'f', 1, 64) + " ms"
	}
	return strconv.FormatFloat(s, 'f', 2, 64) + " s"
}

func sizeText(n int64) string {
	if n < 1e6 {
		return fmt.Sprintf("%.1f kB", float64(n)/1e3)
	}
	return fmt.Sprintf("%.1f MB", float64(n)/1e6)
}
