package layerdiff

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/diff"
	"github.com/containerd/containerd/v2/core/diff/apply"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/plugins/diff/walking"
	"github.com/containerd/log"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"

	"github.com/layerdiff/layerdiff/go/internal/fixture"
	"github.com/layerdiff/layerdiff/go/internal/randtree"
	"github.com/layerdiff/layerdiff/go/internal/testkit"
)

// Benchmarks run ours and containerd's on the same input within each iteration (order
// alternating), and report both times and their ratio, so one run gives the comparison.
// Peak memory is measured in a child process per implementation (max RSS of a process
// that does one operation), since a process's high-water mark cannot be reset.

const benchChildEnv = "LAYERDIFF_BENCH_CHILD"

func TestMain(m *testing.M) {
	if spec := os.Getenv(benchChildEnv); spec != "" {
		os.Exit(benchChild(spec))
	}
	code := m.Run()
	if benchTreesDir != "" {
		_ = unix.Unmount(benchTreesDir, unix.MNT_DETACH)
		os.RemoveAll(benchTreesDir)
	}
	os.Exit(code)
}

// benchTree is a generated input tree, made once per process.
type benchTree struct {
	name  string
	empty string // the lower: an empty directory (a base layer)
	root  string
}

var (
	benchTreesOnce sync.Once
	benchTrees     []benchTree
	benchTreesDir  string
)

func writeBenchFile(b testing.TB, path string, data []byte) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		b.Fatal(err)
	}
}

// benchDir returns a fresh directory on the benchmarks' tmpfs, removed at cleanup.
func benchDir(b testing.TB) string {
	dir, err := os.MkdirTemp(benchTreesDir, "work-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// makeBenchTrees generates "rootfs" (~150 MB in 10,000 files, in ~600 directories) and
// "bigfiles" (4 files of 50 MB).
func makeBenchTrees(b testing.TB) []benchTree {
	benchTreesOnce.Do(func() {
		dir, err := os.MkdirTemp("", "layerdiff-bench-")
		if err != nil {
			b.Fatal(err)
		}
		benchTreesDir = dir
		// Everything (trees, content stores, apply targets) lives on a tmpfs: on this kind
		// of VM, disk writeback dominates an apply of 150 MB and would measure the disk,
		// not the software (both appliers measured ~1.2x apart on disk, I/O-bound).
		if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=6g,mode=0755"); err != nil {
			b.Fatalf("mounting the benchmarks' tmpfs: %v", err)
		}
		empty := filepath.Join(dir, "empty")
		if err := os.Mkdir(empty, 0o755); err != nil {
			b.Fatal(err)
		}

		rng := rand.New(rand.NewPCG(3, 4))
		rootfs := filepath.Join(dir, "rootfs")
		if err := randtree.WriteRootfs(rng, rootfs, 10_000, 150<<20); err != nil {
			b.Fatal(err)
		}
		bigfiles := filepath.Join(dir, "bigfiles")
		for i := 0; i < 4; i++ {
			writeBenchFile(b, filepath.Join(bigfiles, fmt.Sprintf("big%d.bin", i)), randtree.Compressible(rng, 50<<20))
		}
		benchTrees = []benchTree{{"rootfs", empty, rootfs}, {"bigfiles", empty, bigfiles}}
	})
	return benchTrees
}

type impl struct {
	name    string
	compare func(content.Store) diff.Comparer
	apply   func(content.Store) diff.Applier
}

var impls = []impl{
	{"layerdiff", func(cs content.Store) diff.Comparer { return NewDiffer(cs) }, func(cs content.Store) diff.Applier { return NewDiffer(cs) }},
	{"containerd", walking.NewWalkingDiff, func(cs content.Store) diff.Applier { return apply.NewFileSystemApplier(cs) }},
}

func BenchmarkCompareGzip(b *testing.B) {
	testkit.RequireRoot(b, needsRoot)
	_ = log.SetLevel("error")
	for _, tree := range makeBenchTrees(b) {
		b.Run(tree.name, func(b *testing.B) {
			ctx, cs := testkit.ContentStoreIn(b, benchDir(b))
			elapsed := make([]time.Duration, len(impls))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				for k := range impls {
					k := (k + i) % len(impls)
					start := time.Now()
					_, err := impls[k].compare(cs).Compare(ctx, bindMount(tree.empty, true), bindMount(tree.root, true),
						diff.WithMediaType(ocispec.MediaTypeImageLayerGzip))
					if err != nil {
						b.Fatalf("%s: %v", impls[k].name, err)
					}
					elapsed[k] += time.Since(start)
				}
			}
			reportPair(b, elapsed, childSpec{Op: "compare", Lower: tree.empty, Upper: tree.root})
		})
	}
}

func BenchmarkApply(b *testing.B) {
	testkit.RequireRoot(b, needsRoot)
	_ = log.SetLevel("error")
	for _, tree := range makeBenchTrees(b) {
		b.Run(tree.name, func(b *testing.B) {
			ctx, cs := testkit.ContentStoreIn(b, benchDir(b))
			layer, err := walking.NewWalkingDiff(cs).Compare(ctx, bindMount(tree.empty, true), bindMount(tree.root, true),
				diff.WithMediaType(ocispec.MediaTypeImageLayerGzip))
			if err != nil {
				b.Fatal(err)
			}
			elapsed := make([]time.Duration, len(impls))
			targets := benchDir(b)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				for k := range impls {
					k := (k + i) % len(impls)
					b.StopTimer()
					root := filepath.Join(targets, fmt.Sprintf("%s-%d", impls[k].name, i))
					if err := os.Mkdir(root, 0o755); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
					start := time.Now()
					if _, err := impls[k].apply(cs).Apply(ctx, layer, bindMount(root, false)); err != nil {
						b.Fatalf("%s: %v", impls[k].name, err)
					}
					elapsed[k] += time.Since(start)
					b.StopTimer()
					if err := os.RemoveAll(root); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
				}
			}
			b.StopTimer()
			blob := filepath.Join(benchDir(b), "layer")
			if err := os.WriteFile(blob, readBlob(b, ctx, cs, layer), 0o644); err != nil {
				b.Fatal(err)
			}
			reportPair(b, elapsed, childSpec{Op: "apply", Lower: blob})
		})
	}
}

// reportPair reports each implementation's time per op, the ratio, and each one's peak RSS.
func reportPair(b *testing.B, elapsed []time.Duration, spec childSpec) {
	b.StopTimer()
	for k, im := range impls {
		b.ReportMetric(float64(elapsed[k].Milliseconds())/float64(b.N), im.name+"-ms/op")
	}
	b.ReportMetric(elapsed[1].Seconds()/elapsed[0].Seconds(), "speedup-x")
	for _, im := range impls {
		spec.Impl = im.name
		rss, err := childPeakRSS(spec)
		if err != nil {
			b.Fatalf("peak RSS of %s %s: %v", im.name, spec.Op, err)
		}
		b.ReportMetric(float64(rss)/(1<<20), im.name+"-peakRSS-MB")
	}
}

// childSpec is one operation for a child process: compare Lower and Upper, or apply the
// gzip layer in file Lower onto an empty directory.
type childSpec struct {
	Op, Impl, Lower, Upper string
}

// childPeakRSS runs one operation in a fresh process and returns its peak RSS in bytes.
// The child reports its VmHWM: rusage's maxrss would include the parent's peak, which a
// vfork+exec child inherits.
func childPeakRSS(spec childSpec) (int64, error) {
	specJSON, _ := json.Marshal(spec)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), benchChildEnv+"="+string(specJSON))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return 0, fmt.Errorf("%v: %s", err, stderr.Bytes())
	}
	var kb int64
	if _, err := fmt.Sscanf(string(out), "VmHWM: %d kB", &kb); err != nil {
		return 0, fmt.Errorf("child output %q: %v", out, err)
	}
	return kb * 1024, nil
}

// printPeakRSS prints this process's VmHWM line from /proc/self/status.
func printPeakRSS() error {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			fmt.Println(strings.Join(strings.Fields(line), " "))
			return nil
		}
	}
	return fmt.Errorf("no VmHWM in /proc/self/status")
}

// benchChild does one compare (Lower, Upper) or apply (layer file in Lower) and exits.
func benchChild(specJSON string) int {
	var spec childSpec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	_ = log.SetLevel("error")
	var im impl
	for _, i := range impls {
		if i.name == spec.Impl {
			im = i
		}
	}
	// The child works next to the layer or trees it was given (the parent's tmpfs).
	dir, err := os.MkdirTemp(filepath.Dir(spec.Lower), "child-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	db, closeStore, err := fixture.OpenStore(filepath.Join(dir, "store"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer closeStore()
	ctx, cs := namespaces.WithNamespace(context.Background(), "layerdiff-bench"), db.ContentStore()
	switch spec.Op {
	case "compare":
		_, err = im.compare(cs).Compare(ctx, bindMount(spec.Lower, true), bindMount(spec.Upper, true), diff.WithMediaType(ocispec.MediaTypeImageLayerGzip))
	case "apply":
		var f *os.File
		if f, err = os.Open(spec.Lower); err == nil {
			desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip}
			var st os.FileInfo
			st, _ = f.Stat()
			desc.Size = st.Size()
			if desc.Digest, err = digestFile(spec.Lower); err == nil {
				err = content.WriteBlob(ctx, cs, "child", f, desc)
			}
			f.Close()
			if err == nil {
				root := filepath.Join(dir, "root")
				if err = os.Mkdir(root, 0o755); err == nil {
					_, err = im.apply(cs).Apply(ctx, desc, bindMount(root, false))
				}
			}
		}
	default:
		err = fmt.Errorf("unknown op %q", spec.Op)
	}
	if err == nil {
		err = printPeakRSS()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func digestFile(path string) (digest.Digest, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	return digest.SHA256.FromReader(f)
}
