// Command bench compares layerdiff with containerd v2 and with the usual command line tools,
// in one run, on a tmpfs and on the disk, and prints one table (`make bench` runs it).
//
// Jobs: a base layer's diff (empty lower) as gzip and as zstd, and the apply of containerd's
// gzip layer of the tree and of the same layer uncompressed onto an empty directory. Trees: a
// generated rootfs-like one (randtree.WriteRootfs: 10,000 files, 150 MB) and the Go toolchain
// (GOROOT), which every machine with Go has. Peers: containerd's walking differ and fs applier
// (the latter with igzip on PATH, its default then; with unpigz; and with its Go gzip reader),
// and `tar | pigz -6`, `tar | gzip -6`, `tar | zstd -3 -T0`, `gzip -dc | tar -x`,
// `igzip -dc | tar -x`, `tar -xf`. A peer whose program is missing is skipped, loudly.
//
// The commit job (-jobs commit, not run by default; `make bench-commit`; commit.go) times a
// container's commit on containerd's overlayfs snapshotter: our Differ's upperdir fast path,
// our double walk and containerd's walking differ, on a 100,000-file base with 10 and 1,000
// changes, and fails when their diffIDs differ.
//
// Each run is a fresh process: layerdiff and containerd run in a child of this program, which
// times the operation alone (not the content store's ingest of the layer) and reports its own
// VmHWM; a pipeline's peak RSS is the sum of its processes' maxrss as GNU time reports them
// (rusage, which a child spawned straight from this Go process would inherit from it). Runs
// are interleaved (one of every implementation, in a rotating order, then the next round), so
// a change in the machine's load hits all of them alike; the table gives medians.
//
// It needs root (bind mounts, a tmpfs, chown when applying).
package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/diff"
	"github.com/containerd/containerd/v2/core/diff/apply"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/plugins/diff/walking"
	"github.com/containerd/log"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"

	layerdiff "github.com/layerdiff/layerdiff/go"
	"github.com/layerdiff/layerdiff/go/internal/fixture"
	"github.com/layerdiff/layerdiff/go/internal/randtree"
)

const childEnv = "LAYERDIFF_BENCH_CHILD"

// containerd reads these once per process to decide whether DecompressStream runs igzip or
// unpigz (found on PATH) instead of its Go gzip reader.
var containerdGzipEnv = []string{"CONTAINERD_DISABLE_IGZIP", "CONTAINERD_DISABLE_PIGZ"}

func main() {
	if spec := os.Getenv(childEnv); spec != "" {
		os.Exit(child(spec))
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type options struct {
	runs    int
	fsList  []string
	trees   []string
	jobs    []string
	diskDir string
	// The commit job's base and change counts (commit.go).
	commitBases   []commitSize
	commitChanges []int
}

// allJobs are the jobs run by default; commitJob (commit.go) runs only when -jobs names it.
var allJobs = []string{"diff-gzip", "diff-zstd", "apply-gzip", "apply-tar"}

func parseFlags() (options, error) {
	var o options
	var fsList, trees, jobs string
	flag.IntVar(&o.runs, "runs", 3, "runs of each implementation per job (the table shows medians)")
	flag.StringVar(&fsList, "fs", "tmpfs,disk", "where trees, layers and targets live: tmpfs, disk")
	flag.StringVar(&trees, "trees", "rootfs,goroot", "trees: rootfs (generated), goroot (this Go's GOROOT)")
	flag.StringVar(&jobs, "jobs", strings.Join(allJobs, ","), "jobs: "+strings.Join(allJobs, ", ")+", and "+commitJob+" (a container's commit on the overlay snapshotter; not by default)")
	flag.StringVar(&o.diskDir, "disk", "/var/tmp", "a directory on the disk, for the disk runs")
	var commitBases, commitChanges string
	flag.StringVar(&commitBases, "commit-bases", "100000:400", "the commit job's bases, FILES:MB[:LAYERS] (MB of file contents, in LAYERS snapshots, default 1), each with every -commit-changes")
	flag.StringVar(&commitChanges, "commit-changes", "10,1000", "the commit job: numbers of changes, each diffed on its own")
	flag.Parse()
	for _, c := range strings.Split(commitChanges, ",") {
		n, err := strconv.Atoi(c)
		if err != nil || n < 3 {
			return o, fmt.Errorf("-commit-changes: %q is not a number of changes of at least 3", c)
		}
		o.commitChanges = append(o.commitChanges, n)
	}
	for _, b := range strings.Split(commitBases, ",") {
		files, mb, _ := strings.Cut(b, ":")
		mb, layers, hasLayers := strings.Cut(mb, ":")
		size := commitSize{layers: 1}
		var err1, err2, err3 error
		size.files, err1 = strconv.Atoi(files)
		size.mb, err2 = strconv.Atoi(mb)
		if hasLayers {
			size.layers, err3 = strconv.Atoi(layers)
		}
		// The changes pick distinct files outside one leaf directory.
		minFiles := 2 * baseLeafFiles
		for _, n := range o.commitChanges {
			minFiles = max(minFiles, 2*n+baseLeafFiles)
		}
		if err1 != nil || err2 != nil || err3 != nil || size.files < minFiles || size.mb < 1 || size.layers < 1 || size.layers > baseLeafFiles {
			return o, fmt.Errorf("-commit-bases: %q is not FILES:MB[:LAYERS] with at least %d files (twice the changes), 1 MB and 1 to %d layers", b, minFiles, baseLeafFiles)
		}
		o.commitBases = append(o.commitBases, size)
	}
	o.fsList, o.trees, o.jobs = strings.Split(fsList, ","), strings.Split(trees, ","), strings.Split(jobs, ",")
	if o.runs < 1 {
		return o, fmt.Errorf("-runs %d: must be at least 1", o.runs)
	}
	for _, f := range o.fsList {
		if f != "tmpfs" && f != "disk" {
			return o, fmt.Errorf("-fs: unknown file system %q (tmpfs, disk)", f)
		}
	}
	for _, t := range o.trees {
		if t != "rootfs" && t != "goroot" {
			return o, fmt.Errorf("-trees: unknown tree %q (rootfs, goroot)", t)
		}
	}
	for _, j := range o.jobs {
		if !slices.Contains(allJobs, j) && j != commitJob {
			return o, fmt.Errorf("-jobs: unknown job %q (%s, %s)", j, strings.Join(allJobs, ", "), commitJob)
		}
	}
	return o, nil
}

// impl is one implementation of a job: in a child of this program (layerdiff, containerd),
// or a shell pipeline of command line tools.
type impl struct {
	name  string
	child string   // "layerdiff" or "containerd"; empty for a pipeline
	env   []string // added to the child's environment
	needs []string // programs that must be on PATH
	// pipeline returns the stages of a pipeline, the first reading in (a tree or a layer),
	// the last writing out (a file or an apply target).
	pipeline func(in, out string) []string
}

func implsFor(job string) []impl {
	ours := impl{name: "layerdiff", child: "layerdiff"}
	cd := impl{name: "containerd", child: "containerd"}
	tarc := func(in, _ string) string { return "tar -C " + shq(in) + " -cf - ." }
	tarx := func(_, out string) string { return "tar -C " + shq(out) + " -xf -" }
	switch job {
	case "diff-gzip":
		return []impl{ours, cd,
			{name: "tar | pigz -6", needs: []string{"tar", "pigz"}, pipeline: func(in, out string) []string {
				return []string{tarc(in, out), "pigz -6 > " + shq(out)}
			}},
			{name: "tar | gzip -6", needs: []string{"tar", "gzip"}, pipeline: func(in, out string) []string {
				return []string{tarc(in, out), "gzip -6 > " + shq(out)}
			}},
		}
	case "diff-zstd":
		return []impl{ours, cd,
			{name: "tar | zstd -3 -T0", needs: []string{"tar", "zstd"}, pipeline: func(in, out string) []string {
				return []string{tarc(in, out), "zstd -q -3 -T0 > " + shq(out)}
			}},
		}
	case "apply-gzip":
		return []impl{ours,
			{name: "containerd, igzip", child: "containerd", needs: []string{"igzip"}},
			{name: "containerd, unpigz", child: "containerd", needs: []string{"unpigz"}, env: []string{"CONTAINERD_DISABLE_IGZIP=1"}},
			{name: "containerd, Go gzip", child: "containerd", env: []string{"CONTAINERD_DISABLE_IGZIP=1", "CONTAINERD_DISABLE_PIGZ=1"}},
			{name: "gzip -dc | tar -x", needs: []string{"tar", "gzip"}, pipeline: func(in, out string) []string {
				return []string{"gzip -dc " + shq(in), tarx(in, out)}
			}},
			{name: "igzip -dc | tar -x", needs: []string{"tar", "igzip"}, pipeline: func(in, out string) []string {
				return []string{"igzip -dc " + shq(in), tarx(in, out)}
			}},
		}
	case "apply-tar":
		return []impl{ours, cd,
			{name: "tar -xf", needs: []string{"tar"}, pipeline: func(in, out string) []string {
				return []string{"tar -C " + shq(out) + " -xf " + shq(in)}
			}},
		}
	}
	panic("unknown job " + job)
}

func shq(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// result is one run's measurement.
type result struct {
	elapsed time.Duration
	peakKB  int64 // 0 when unknown
	outSize int64 // the diff's size; 0 for an apply
}

type row struct {
	fs, tree, job, impl string
	results             []result
	skipped             string
}

func run() error {
	opts, err := parseFlags()
	if err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root: it mounts a tmpfs and bind mounts, and applies layers that chown")
	}
	_ = log.SetLevel("error")
	for _, env := range containerdGzipEnv {
		os.Unsetenv(env) // each containerd variant sets its own
	}
	gnuTime, _ := exec.LookPath("time")
	if gnuTime == "" {
		if _, err := os.Stat("/usr/bin/time"); err == nil {
			gnuTime = "/usr/bin/time"
		}
	}
	if gnuTime == "" {
		fmt.Fprintln(os.Stderr, "bench: WARNING: GNU time not found (Debian package time): no peak RSS for the pipelines")
	}
	// The tree jobs run on each of opts.trees; the commit job has its own base.
	treeOpts := opts
	treeOpts.jobs = slices.DeleteFunc(slices.Clone(opts.jobs), func(j string) bool { return j == commitJob })
	if len(treeOpts.jobs) == 0 {
		treeOpts.trees = nil
	}
	goroot, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil && slices.Contains(treeOpts.trees, "goroot") {
		return fmt.Errorf("go env GOROOT: %v (the goroot tree needs the go command on PATH)", err)
	}

	header := machineHeader()
	var rows []row
	var commitRows []commitRow
	var commitBases []commitBase
	for _, fsName := range opts.fsList {
		base, cleanup, err := workDir(fsName, opts.diskDir)
		if err != nil {
			return err
		}
		fsRows, err := benchFS(treeOpts, fsName, base, strings.TrimSpace(string(goroot)), gnuTime)
		if err == nil && slices.Contains(opts.jobs, commitJob) {
			var cRows []commitRow
			var cBases []commitBase
			cRows, cBases, err = benchCommit(opts, fsName, base)
			commitRows, commitBases = append(commitRows, cRows...), append(commitBases, cBases...)
		}
		cleanup()
		if err != nil {
			return err
		}
		rows = append(rows, fsRows...)
	}
	fmt.Println(header)
	fmt.Printf("load average at the end: %s\n\n", loadAvg())
	if len(rows) > 0 {
		printTable(os.Stdout, rows, opts.runs)
	}
	if len(commitRows) > 0 {
		if len(rows) > 0 {
			fmt.Println()
		}
		printCommitTable(os.Stdout, commitRows, commitBases, opts.runs)
	}
	if failures > 0 {
		return fmt.Errorf("%d runs failed (see the FAILED lines)", failures)
	}
	return nil
}

// workDir makes the directory one file system's runs work in: a fresh tmpfs, or a directory
// under diskDir.
func workDir(fsName, diskDir string) (string, func(), error) {
	if fsName == "tmpfs" {
		dir, err := os.MkdirTemp("", "layerdiff-bench-")
		if err != nil {
			return "", nil, err
		}
		if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=6g,mode=0755"); err != nil {
			os.Remove(dir)
			return "", nil, fmt.Errorf("mounting a tmpfs on %s: %v", dir, err)
		}
		return dir, func() { _ = unix.Unmount(dir, unix.MNT_DETACH); os.Remove(dir) }, nil
	}
	if err := os.MkdirAll(diskDir, 0o755); err != nil {
		return "", nil, err
	}
	var st unix.Statfs_t
	if err := unix.Statfs(diskDir, &st); err == nil && st.Type == unix.TMPFS_MAGIC {
		return "", nil, fmt.Errorf("-disk %s is on a tmpfs: give a directory on a disk", diskDir)
	}
	dir, err := os.MkdirTemp(diskDir, "layerdiff-bench-")
	if err != nil {
		return "", nil, err
	}
	return dir, func() { os.RemoveAll(dir) }, nil
}

func benchFS(opts options, fsName, base, goroot, gnuTime string) ([]row, error) {
	empty := filepath.Join(base, "empty")
	if err := os.Mkdir(empty, 0o755); err != nil {
		return nil, err
	}
	var rows []row
	for _, treeName := range opts.trees {
		tree := filepath.Join(base, treeName)
		progress("%s: preparing %s", fsName, treeName)
		switch treeName {
		case "rootfs":
			if err := randtree.WriteRootfs(rand.New(rand.NewPCG(3, 4)), tree, 10_000, 150<<20); err != nil {
				return nil, err
			}
		case "goroot":
			if err := os.Mkdir(tree, 0o755); err != nil {
				return nil, err
			}
			if err := fixture.CopyTree(goroot, tree); err != nil {
				return nil, err
			}
		}
		gzLayer, tarLayer, err := makeLayers(base, empty, tree)
		if err != nil {
			return nil, fmt.Errorf("making containerd's layer of %s: %v", treeName, err)
		}
		for _, job := range opts.jobs {
			in := tree
			switch job {
			case "apply-gzip":
				in = gzLayer
			case "apply-tar":
				in = tarLayer
			}
			impls := implsFor(job)
			jobRows := make([]row, len(impls))
			for k, im := range impls {
				jobRows[k] = row{fs: fsName, tree: treeName, job: job, impl: im.name}
				for _, prog := range im.needs {
					if _, err := exec.LookPath(prog); err != nil {
						jobRows[k].skipped = "skipped: " + prog + " not on PATH"
						fmt.Fprintf(os.Stderr, "bench: SKIPPED %s for %s: %s not on PATH\n", im.name, job, prog)
					}
				}
			}
			for r := 0; r < opts.runs; r++ {
				for i := range impls {
					k := (i + r) % len(impls)
					if jobRows[k].skipped != "" {
						continue
					}
					res, err := runOnce(impls[k], job, base, empty, in, gnuTime, fsName == "disk")
					if err != nil {
						// One failing implementation (a program gone from PATH mid-run, a
						// full disk) costs its row, not the whole table.
						jobRows[k].skipped = "FAILED: " + firstLine(err.Error())
						fmt.Fprintf(os.Stderr, "bench: FAILED %s %s %s (%s): %v\n", fsName, treeName, job, impls[k].name, err)
						failures++
						continue
					}
					progress("%s %s %s %-20s run %d: %.3f s", fsName, treeName, job, impls[k].name, r+1, res.elapsed.Seconds())
					jobRows[k].results = append(jobRows[k].results, res)
				}
			}
			rows = append(rows, jobRows...)
		}
		for _, p := range []string{tree, gzLayer, tarLayer} {
			os.RemoveAll(p)
		}
	}
	return rows, nil
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// failures counts the runs that failed; the command exits non-zero when there were any.
var failures int

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

// makeLayers writes containerd's gzip layer of tree (a base layer: lower is empty) and the
// same layer uncompressed, as files under base.
func makeLayers(base, empty, tree string) (gzPath, tarPath string, err error) {
	store := filepath.Join(base, "layer-store")
	defer os.RemoveAll(store)
	db, closeDB, err := fixture.OpenStore(store)
	if err != nil {
		return "", "", err
	}
	defer closeDB()
	ctx, cs := namespaces.WithNamespace(context.Background(), "layerdiff-bench"), db.ContentStore()
	desc, err := walking.NewWalkingDiff(cs).Compare(ctx, bindMount(empty, true), bindMount(tree, true),
		diff.WithMediaType(ocispec.MediaTypeImageLayerGzip))
	if err != nil {
		return "", "", err
	}
	ra, err := cs.ReaderAt(ctx, desc)
	if err != nil {
		return "", "", err
	}
	defer ra.Close()
	gzPath, tarPath = filepath.Join(base, filepath.Base(tree)+".tar.gz"), filepath.Join(base, filepath.Base(tree)+".tar")
	if err := writeFile(gzPath, content.NewReader(ra)); err != nil {
		return "", "", err
	}
	gz, err := os.Open(gzPath)
	if err != nil {
		return "", "", err
	}
	defer gz.Close()
	zr, err := gzip.NewReader(gz)
	if err != nil {
		return "", "", err
	}
	return gzPath, tarPath, writeFile(tarPath, zr)
}

func writeFile(path string, r io.Reader) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// scratchDir makes a run's scratch directory under base; cleanup removes it. On the disk, dirty
// pages are written back before the run and after the removal (both untimed).
func scratchDir(base string, onDisk bool) (dir string, cleanup func(), err error) {
	dir, err = os.MkdirTemp(base, "run-")
	if err != nil {
		return "", nil, err
	}
	if onDisk {
		unix.Sync()
	}
	return dir, func() {
		os.RemoveAll(dir)
		if onDisk {
			unix.Sync()
		}
	}, nil
}

// runOnce runs one implementation once, in a scratch directory under base removed after it
// (untimed). On the disk, dirty pages are written back before and after (untimed), so one
// run's writeback does not land on the next.
func runOnce(im impl, job, base, empty, in, gnuTime string, onDisk bool) (result, error) {
	scratch, cleanup, err := scratchDir(base, onDisk)
	if err != nil {
		return result{}, err
	}
	defer cleanup()
	if im.child != "" {
		return runChild(im, childSpec{Impl: im.child, Job: job, Empty: empty, In: in, Work: scratch})
	}
	out := filepath.Join(scratch, "out")
	if strings.HasPrefix(job, "apply") {
		if err := os.Mkdir(out, 0o755); err != nil {
			return result{}, err
		}
	}
	return runPipeline(im.pipeline(in, out), scratch, out, gnuTime, strings.HasPrefix(job, "diff"))
}

// runPipeline runs the stages as one bash pipeline (pipefail: a failing stage fails it) and sums its processes' maxrss.
func runPipeline(stages []string, scratch, out, gnuTime string, diffJob bool) (result, error) {
	var rssFiles []string
	script := make([]string, len(stages))
	for i, stage := range stages {
		script[i] = stage
		if gnuTime != "" {
			f := filepath.Join(scratch, fmt.Sprintf("rss%d", i))
			rssFiles = append(rssFiles, f)
			script[i] = shq(gnuTime) + " -f %M -o " + shq(f) + " " + stage
		}
	}
	cmd := exec.Command("bash", "-o", "pipefail", "-c", strings.Join(script, " | "))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	err := cmd.Run()
	res := result{elapsed: time.Since(start)}
	if err != nil {
		return res, fmt.Errorf("%s: %v: %s", strings.Join(stages, " | "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	for _, f := range rssFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			return res, err
		}
		lines := strings.Fields(string(b))
		kb, err := strconv.ParseInt(lines[len(lines)-1], 10, 64)
		if err != nil {
			return res, fmt.Errorf("GNU time's output %q: %v", b, err)
		}
		res.peakKB += kb
	}
	if diffJob {
		st, err := os.Stat(out)
		if err != nil {
			return res, err
		}
		res.outSize = st.Size()
	}
	return res, nil
}

// childSpec is one run for a child: a diff of Empty against the tree In, or an apply of the
// layer file In onto an empty directory; Work is its scratch directory.
type childSpec struct {
	Impl, Job, Empty, In, Work string
	// The commit job's mounts (commit.go): Impl is a commit mode there.
	Lower, Upper []mount.Mount `json:",omitempty"`
}

type childReport struct {
	ElapsedNS int64
	PeakKB    int64
	OutSize   int64
	// The commit job's (commit.go).
	DiffID           string `json:",omitempty"`
	UncompressedSize int64  `json:",omitempty"`
	MountNS, CoreNS  int64  `json:",omitempty"`
	StoreNS          int64  `json:",omitempty"`
	CPUNS            int64  `json:",omitempty"`
	BreakdownNS      int64  `json:",omitempty"`
}

func runChild(im impl, spec childSpec) (result, error) {
	specJSON, _ := json.Marshal(spec)
	self, err := os.Executable()
	if err != nil {
		return result{}, err
	}
	cmd := exec.Command(self)
	cmd.Env = append(append(os.Environ(), childEnv+"="+string(specJSON)), im.env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return result{}, fmt.Errorf("%v: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	var rep childReport
	if err := json.Unmarshal(out, &rep); err != nil {
		return result{}, fmt.Errorf("child's report %q: %v", out, err)
	}
	return result{elapsed: time.Duration(rep.ElapsedNS), peakKB: rep.PeakKB, outSize: rep.OutSize}, nil
}

func child(specJSON string) int {
	rep, err := childRun(specJSON)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	out, _ := json.Marshal(rep)
	fmt.Println(string(out))
	return 0
}

func childRun(specJSON string) (childReport, error) {
	var spec childSpec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		return childReport{}, err
	}
	_ = log.SetLevel("error")
	db, closeDB, err := fixture.OpenStore(filepath.Join(spec.Work, "store"))
	if err != nil {
		return childReport{}, err
	}
	defer closeDB()
	ctx, cs := namespaces.WithNamespace(context.Background(), "layerdiff-bench"), db.ContentStore()
	if spec.Job == commitJob {
		return commitChild(ctx, spec, cs)
	}
	var comparer diff.Comparer
	var applier diff.Applier
	if spec.Impl == "layerdiff" {
		d := layerdiff.NewDiffer(cs)
		comparer, applier = d, d
	} else {
		comparer, applier = walking.NewWalkingDiff(cs), apply.NewFileSystemApplier(cs)
	}
	var rep childReport
	switch spec.Job {
	case "diff-gzip", "diff-zstd":
		mediaType := ocispec.MediaTypeImageLayerGzip
		if spec.Job == "diff-zstd" {
			mediaType = ocispec.MediaTypeImageLayerZstd
		}
		start := time.Now()
		desc, err := comparer.Compare(ctx, bindMount(spec.Empty, true), bindMount(spec.In, true), diff.WithMediaType(mediaType))
		rep.ElapsedNS = int64(time.Since(start))
		if err != nil {
			return rep, err
		}
		rep.OutSize = desc.Size
	case "apply-gzip", "apply-tar":
		mediaType := ocispec.MediaTypeImageLayerGzip
		if spec.Job == "apply-tar" {
			mediaType = ocispec.MediaTypeImageLayer
		}
		desc, err := ingest(ctx, cs, spec.In, mediaType)
		if err != nil {
			return rep, err
		}
		root := filepath.Join(spec.Work, "root")
		if err := os.Mkdir(root, 0o755); err != nil {
			return rep, err
		}
		start := time.Now()
		_, err = applier.Apply(ctx, desc, bindMount(root, false))
		rep.ElapsedNS = int64(time.Since(start))
		if err != nil {
			return rep, err
		}
	default:
		return rep, fmt.Errorf("unknown job %q", spec.Job)
	}
	rep.PeakKB, err = vmHWM()
	return rep, err
}

// ingest writes the layer file into the content store and returns its descriptor.
func ingest(ctx context.Context, cs content.Store, path, mediaType string) (ocispec.Descriptor, error) {
	f, err := os.Open(path)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	defer f.Close()
	dgst, err := digest.SHA256.FromReader(f)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	st, err := f.Stat()
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return ocispec.Descriptor{}, err
	}
	desc := ocispec.Descriptor{MediaType: mediaType, Digest: dgst, Size: st.Size()}
	return desc, content.WriteBlob(ctx, cs, "bench-layer", f, desc)
}

// vmHWM returns this process's peak RSS in kB (the VmHWM line of /proc/self/status).
func vmHWM() (int64, error) {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			return strconv.ParseInt(f[1], 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/self/status")
}

func bindMount(dir string, readonly bool) []mount.Mount {
	mode := "rw"
	if readonly {
		mode = "ro"
	}
	return []mount.Mount{{Type: "bind", Source: dir, Options: []string{"rbind", mode}}}
}

func machineHeader() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if name, ok := strings.CutPrefix(line, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(name), ":"))
				break
			}
		}
	}
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	return fmt.Sprintf("layerdiff %s bench: %s, %d cores, Linux %s, %s; load average at the start: %s",
		layerdiff.Version(), model, runtime.NumCPU(), unix.ByteSliceToString(uts.Release[:]), runtime.Version(), loadAvg())
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// printTable prints one markdown table: per job, each implementation's median time, the
// spread of its runs, its time over layerdiff's, its largest peak RSS and the diff's size.
func printTable(w io.Writer, rows []row, runs int) {
	fmt.Fprintf(w, "medians of %d runs; \"x ours\" is the time over layerdiff's (above 1: layerdiff is faster)\n", runs)
	fmt.Fprintln(w, "(containerd's peak RSS leaves out its igzip or unpigz process: a few MB)")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| fs | tree | job | implementation | median | min – max | x ours | peak RSS | output |")
	fmt.Fprintln(w, "|---|---|---|---|---:|---:|---:|---:|---:|")
	var oursMedian float64
	for _, r := range rows {
		r.impl = strings.ReplaceAll(r.impl, "|", `\|`) // a pipe would end the table cell
		if r.skipped != "" || len(r.results) == 0 {
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | | | | |\n", r.fs, r.tree, r.job, r.impl, strings.ReplaceAll(r.skipped, "|", `\|`))
			continue
		}
		secs := make([]float64, len(r.results))
		var peak, size int64
		for i, res := range r.results {
			secs[i] = res.elapsed.Seconds()
			peak = max(peak, res.peakKB)
			size = res.outSize
		}
		med := median(secs)
		if r.impl == "layerdiff" {
			oursMedian = med
		}
		ratio := "1.00"
		if r.impl != "layerdiff" && oursMedian > 0 {
			ratio = fmt.Sprintf("%.2f", med/oursMedian)
		}
		peakText := "?"
		if peak > 0 {
			peakText = fmt.Sprintf("%.1f MB", float64(peak)/1024)
		}
		sizeText := ""
		if size > 0 {
			sizeText = fmt.Sprintf("%.1f MB", float64(size)/1e6)
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %.2f s | %.2f – %.2f | %s | %s | %s |\n", r.fs, r.tree, r.job, r.impl,
			med, slices.Min(secs), slices.Max(secs), ratio, peakText, sizeText)
	}
}
