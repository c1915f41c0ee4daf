package layerdiff

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/diff"
	"github.com/containerd/containerd/v2/core/diff/apply"
	"github.com/containerd/containerd/v2/pkg/archive"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/layerdiff/layerdiff/go/internal/testkit"
)

// xorMediaType is a made-up layer encoding: a gzip layer with every byte XORed with the
// payload's key. Only the test stream processor below can read it.
const xorMediaType = "application/vnd.layerdiff.test.layer.v1.tar+gzip+xor"

const xorPayloadID = "layerdiff-test-xor"

var registerXorOnce sync.Once

func registerXorProcessor() {
	registerXorOnce.Do(func() {
		diff.RegisterProcessor(diff.StaticHandler(xorMediaType, func(ctx context.Context, stream diff.StreamProcessor, payloads map[string]typeurl.Any) (diff.StreamProcessor, error) {
			payload, ok := payloads[xorPayloadID]
			if !ok {
				return nil, fmt.Errorf("xor processor: no key in payloads: %w", errdefs.ErrFailedPrecondition)
			}
			key := payload.GetValue()
			if len(key) != 1 {
				return nil, fmt.Errorf("xor processor: key must be one byte")
			}
			return &xorProcessor{r: stream, key: key[0]}, nil
		}))
	})
}

type xorProcessor struct {
	r   io.Reader
	key byte
}

func (x *xorProcessor) Read(p []byte) (int, error) {
	n, err := x.r.Read(p)
	for i := range p[:n] {
		p[i] ^= x.key
	}
	return n, err
}

func (x *xorProcessor) Close() error      { return nil }
func (x *xorProcessor) MediaType() string { return ocispec.MediaTypeImageLayerGzip }

type xorKey struct{ key byte }

func (k xorKey) GetTypeUrl() string { return "layerdiff.test/xor-key" }
func (k xorKey) GetValue() []byte   { return []byte{k.key} }

// TestApplyStreamProcessor: a media type only a registered processor understands is
// decoded in Go and applied by the core, with the same result as containerd's applier.
func TestApplyStreamProcessor(t *testing.T) {
	testkit.RequireRoot(t, needsRoot)
	registerXorProcessor()
	lower, upper := pairDirs(t, 2)
	ctx, cs := testkit.ContentStore(t)
	gz := containerdLayer(t, ctx, cs, lower, upper, ocispec.MediaTypeImageLayerGzip)
	data := readBlob(t, ctx, cs, gz)
	for i := range data {
		data[i] ^= 0x5a
	}
	layer := writeBlob(t, ctx, cs, xorMediaType, data)
	payloads := diff.WithPayloads(map[string]typeurl.Any{xorPayloadID: xorKey{0x5a}})

	applyBoth(t, ctx, cs, layer, lower, payloads)

	// Without the payload the processor refuses, and so do we (its error, not ours).
	_, err := NewDiffer(cs).Apply(ctx, layer, bindMount(t.TempDir(), false))
	if !errdefs.IsFailedPrecondition(err) {
		t.Errorf("Apply without payload: %v, want the processor's FailedPrecondition", err)
	}
}

// TestApplyPlainTarNotSniffed: a gzip blob declared as plain tar fails in containerd
// (plain tar is never decompressed); it must fail here too.
func TestApplyPlainTarNotSniffed(t *testing.T) {
	testkit.RequireRoot(t, needsRoot)
	lower, upper := pairDirs(t, 0)
	ctx, cs := testkit.ContentStore(t)
	gz := containerdLayer(t, ctx, cs, lower, upper, ocispec.MediaTypeImageLayerGzip)
	mislabeled := gz
	mislabeled.MediaType = ocispec.MediaTypeImageLayer
	if _, err := apply.NewFileSystemApplier(cs).Apply(ctx, mislabeled, bindMount(t.TempDir(), false)); err == nil {
		t.Fatal("containerd applied gzip as plain tar: the premise of this test is wrong")
	}
	_, err := NewDiffer(cs).Apply(ctx, mislabeled, bindMount(t.TempDir(), false))
	if !errdefs.IsInvalidArgument(err) {
		t.Errorf("gzip declared as tar: %v, want InvalidArgument", err)
	}
}

// TestApplyProgress: like containerd, progress starts at 0 and ends at the blob's size.
func TestApplyProgress(t *testing.T) {
	testkit.RequireRoot(t, needsRoot)
	lower, upper := pairDirs(t, 1)
	ctx, cs := testkit.ContentStore(t)
	layer := containerdLayer(t, ctx, cs, lower, upper, ocispec.MediaTypeImageLayerGzip)
	for name, applier := range map[string]diff.Applier{"layerdiff": NewDiffer(cs), "containerd": apply.NewFileSystemApplier(cs)} {
		var seen []int64
		_, err := applier.Apply(ctx, layer, bindMount(t.TempDir(), false), diff.WithProgress(func(d ocispec.Descriptor, n int64) {
			if d.Digest != layer.Digest {
				t.Errorf("%s: progress for %s", name, d.Digest)
			}
			seen = append(seen, n)
		}))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(seen) < 2 || seen[0] != 0 || seen[len(seen)-1] != layer.Size {
			t.Errorf("%s: progress %v, want 0 first and %d last", name, seen, layer.Size)
		}
		for i := 1; i < len(seen); i++ {
			if seen[i] < seen[i-1] {
				t.Errorf("%s: progress went backwards: %v", name, seen)
				break
			}
		}
	}
}

// TestBindingsRoundTrip: the low-level calls on plain directories, with the C progress
// callback: compare → apply onto a copy of lower gives upper.
func TestBindingsRoundTrip(t *testing.T) {
	testkit.RequireRoot(t, needsRoot)
	lower, upper := pairDirs(t, 0)
	for _, c := range []Compression{CompressionGzip, CompressionNone, CompressionZstd} {
		t.Run(fmt.Sprint(c), func(t *testing.T) {
			var buf bytes.Buffer
			var produced atomic.Uint64
			res, err := Compare(context.Background(), lower, upper, &buf, CompareOptions{
				Compression: c,
				Progress:    func(n uint64) { produced.Store(n) },
			})
			if err != nil {
				t.Fatal(err)
			}
			if res.Size != int64(buf.Len()) || res.Digest != digest.FromBytes(buf.Bytes()) {
				t.Errorf("result %+v does not describe the %d bytes written (%s)", res, buf.Len(), digest.FromBytes(buf.Bytes()))
			}
			if produced.Load() == 0 || produced.Load() > uint64(res.UncompressedSize) {
				t.Errorf("compare progress %d, uncompressed size %d", produced.Load(), res.UncompressedSize)
			}
			var want bytes.Buffer
			if err := archive.WriteDiff(context.Background(), &want, lower, upper); err != nil {
				t.Fatal(err)
			}
			if res.DiffID != digest.FromBytes(want.Bytes()) || res.UncompressedSize != int64(want.Len()) {
				t.Errorf("diffID %s/%d, containerd WriteDiff %s/%d", res.DiffID, res.UncompressedSize, digest.FromBytes(want.Bytes()), want.Len())
			}

			root := t.TempDir()
			testkit.CopyTree(t, lower, root)
			var consumed atomic.Uint64
			applied, err := Apply(context.Background(), root, bytes.NewReader(buf.Bytes()), ApplyOptions{
				Progress: func(n uint64) { consumed.Store(n) },
			})
			if err != nil {
				t.Fatal(err)
			}
			if applied.Digest != res.DiffID || applied.Size != res.UncompressedSize || applied.MediaType != ocispec.MediaTypeImageLayer {
				t.Errorf("apply result %+v, compare result %+v", applied, res)
			}
			if consumed.Load() == 0 || consumed.Load() > uint64(buf.Len()) {
				t.Errorf("apply progress %d, input %d bytes", consumed.Load(), buf.Len())
			}
			requireSameTreeAs(t, upper, root, true)
		})
	}
}

// TestErrorKinds: core errors arrive as errdefs classes with the core's message.
func TestErrorKinds(t *testing.T) {
	testkit.RequireRoot(t, needsRoot)
	ctx := context.Background()
	missing := filepath.Join(t.TempDir(), "does-not-exist")

	_, err := Compare(ctx, missing, t.TempDir(), io.Discard, CompareOptions{})
	if !errdefs.IsNotFound(err) || !strings.Contains(err.Error(), "does-not-exist") {
		t.Errorf("compare of a missing lower: %v, want NotFound naming the path", err)
	}
	var coreErr *Error
	if !errors.As(err, &coreErr) || coreErr.Kind != KindNotFound || coreErr.Errno == 0 {
		t.Errorf("compare of a missing lower: %#v, want *Error kind NotFound with errno", err)
	}

	_, err = Apply(ctx, t.TempDir(), strings.NewReader(strings.Repeat("garbage!", 200)), ApplyOptions{})
	if !errdefs.IsInvalidArgument(err) || !errors.Is(err, ErrInvalidArchive) {
		t.Errorf("apply of garbage: %v, want InvalidArgument/invalid archive", err)
	}

	// A hostile whiteout is refused, as containerd refuses it.
	hostile := tarOf(t, &tar.Header{Name: "dir/.wh..", Typeflag: tar.TypeReg, Mode: 0o644})
	if _, err := archive.Apply(ctx, t.TempDir(), bytes.NewReader(hostile)); err == nil {
		t.Error("containerd accepted the hostile whiteout: the premise of this check is wrong")
	}
	_, err = Apply(ctx, t.TempDir(), bytes.NewReader(hostile), ApplyOptions{})
	if !errdefs.IsInvalidArgument(err) {
		t.Errorf("apply of a hostile whiteout: %v, want InvalidArgument", err)
	}

	// The caller's writer failing stops the compare with the writer's error.
	lower, upper := pairDirs(t, 0)
	writeErr := errors.New("disk full (test)")
	_, err = Compare(ctx, lower, upper, failingWriter{err: writeErr}, CompareOptions{Compression: CompressionNone})
	if !errors.Is(err, writeErr) {
		t.Errorf("compare into a failing writer: %v, want the writer's error", err)
	}

	// The caller's reader failing stops the apply with the reader's error.
	readErr := errors.New("network gone (test)")
	var layer bytes.Buffer
	if _, err := Compare(ctx, lower, upper, &layer, CompareOptions{Compression: CompressionNone}); err != nil {
		t.Fatal(err)
	}
	_, err = Apply(ctx, t.TempDir(), io.MultiReader(bytes.NewReader(layer.Bytes()[:layer.Len()/2]), failingReader{readErr}), ApplyOptions{})
	if !errors.Is(err, readErr) {
		t.Errorf("apply from a failing reader: %v, want the reader's error", err)
	}

	// A panicking progress callback is an error, not a crash.
	_, err = Compare(ctx, lower, upper, io.Discard, CompareOptions{Progress: func(uint64) { panic("boom") }})
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Errorf("compare with a panicking progress callback: %v", err)
	}
}

type failingWriter struct{ err error }

func (w failingWriter) Write(p []byte) (int, error) { return 0, w.err }

type failingReader struct{ err error }

func (r failingReader) Read([]byte) (int, error) { return 0, r.err }

func tarOf(t testing.TB, headers ...*tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range headers {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// endlessLayer streams a valid tar that never ends (until closed): many small files.
func endlessLayer() io.ReadCloser {
	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		data := bytes.Repeat([]byte("x"), 4096)
		for i := 0; ; i++ {
			hdr := &tar.Header{Name: fmt.Sprintf("d%d/f%d", i%16, i), Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data))}
			if err := tw.WriteHeader(hdr); err != nil {
				return
			}
			if _, err := tw.Write(data); err != nil {
				return
			}
		}
	}()
	return pr
}

// TestCancelMidApply: cancelling the context stops an apply of an endless layer promptly,
// with an error matching context.Canceled.
func TestCancelMidApply(t *testing.T) {
	testkit.RequireRoot(t, needsRoot)
	ctx, cancel := context.WithCancel(context.Background())
	layer := endlessLayer()
	defer layer.Close()
	started := make(chan struct{})
	var once sync.Once
	done := make(chan error, 1)
	go func() {
		_, err := Apply(ctx, t.TempDir(), layer, ApplyOptions{Progress: func(n uint64) {
			if n > 1<<20 {
				once.Do(func() { close(started) })
			}
		}})
		done <- err
	}()
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("apply of an endless layer returned before cancel: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("apply made no progress in 60s")
	}
	cancel()
	// A generous bound: this detects a hang, it does not measure speed.
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) || !errdefs.IsCanceled(err) {
			t.Errorf("cancelled apply: %v, want context.Canceled", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("apply did not return within 20s of cancel")
	}

	// Compare with an already-cancelled context does not even start.
	if _, err := Compare(ctx, t.TempDir(), t.TempDir(), io.Discard, CompareOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("compare with a cancelled context: %v", err)
	}
}

// TestConcurrent: 32 goroutines compare and apply at once (run under -race by `make test`);
// each must get the same layer as the others.
func TestConcurrent(t *testing.T) {
	testkit.RequireRoot(t, needsRoot)
	lower, upper := pairDirs(t, 1)
	var want bytes.Buffer
	if err := archive.WriteDiff(context.Background(), &want, lower, upper); err != nil {
		t.Fatal(err)
	}
	wantID := digest.FromBytes(want.Bytes())
	const workers = 32
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			var buf bytes.Buffer
			var progress atomic.Int64
			res, err := Compare(context.Background(), lower, upper, &buf, CompareOptions{
				Compression: Compression(i % 3),
				Progress:    func(uint64) { progress.Add(1) },
			})
			if err != nil {
				errs <- fmt.Errorf("worker %d compare: %w", i, err)
				return
			}
			if res.DiffID != wantID {
				errs <- fmt.Errorf("worker %d: diffID %s, want %s", i, res.DiffID, wantID)
				return
			}
			root, err := os.MkdirTemp("", "layerdiff-concurrent-")
			if err != nil {
				errs <- err
				return
			}
			defer os.RemoveAll(root)
			applied, err := Apply(context.Background(), root, &buf, ApplyOptions{Progress: func(uint64) { progress.Add(1) }})
			if err != nil {
				errs <- fmt.Errorf("worker %d apply: %w", i, err)
				return
			}
			if applied.Digest != wantID {
				errs <- fmt.Errorf("worker %d: applied %s, want %s", i, applied.Digest, wantID)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestNoLeaks: many calls, successful and failing, leave no file descriptors or goroutines.
func TestNoLeaks(t *testing.T) {
	testkit.RequireRoot(t, needsRoot)
	lower, upper := pairDirs(t, 0)
	run := func() {
		var buf bytes.Buffer
		if _, err := Compare(context.Background(), lower, upper, &buf, CompareOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := Apply(context.Background(), t.TempDir(), &buf, ApplyOptions{}); err != nil {
			t.Fatal(err)
		}
		_, _ = Compare(context.Background(), "/nonexistent-layerdiff", upper, io.Discard, CompareOptions{})
		_, _ = Compare(context.Background(), lower, upper, failingWriter{err: errors.New("x")}, CompareOptions{})
		_, _ = Apply(context.Background(), t.TempDir(), strings.NewReader("garbage"), ApplyOptions{})
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, _ = Apply(ctx, t.TempDir(), &buf, ApplyOptions{})
	}
	run() // warm up pools and lazily opened descriptors
	fdsBefore, goroutinesBefore := openFDs(t), runtime.NumGoroutine()
	for i := 0; i < 20; i++ {
		run()
	}
	// Goroutines finish asynchronously after their last send; give them a moment.
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > goroutinesBefore && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if fds := openFDs(t); fds != fdsBefore {
		t.Errorf("open file descriptors: %d before, %d after", fdsBefore, fds)
	}
	if g := runtime.NumGoroutine(); g > goroutinesBefore {
		t.Errorf("goroutines: %d before, %d after", goroutinesBefore, g)
	}
}

// endlessMediaType is decoded by a test processor into a tar stream that never ends.
const endlessMediaType = "application/vnd.layerdiff.test.endless"

var registerEndlessOnce sync.Once

type endlessProcessor struct{ io.ReadCloser }

func (endlessProcessor) MediaType() string { return ocispec.MediaTypeImageLayer }

// TestCancelMidDifferApply: cancelling the context stops Differ.Apply (content store,
// stream processor, bind mount) promptly with a Canceled error, and unmounts.
func TestCancelMidDifferApply(t *testing.T) {
	testkit.RequireRoot(t, needsRoot)
	registerEndlessOnce.Do(func() {
		diff.RegisterProcessor(diff.StaticHandler(endlessMediaType, func(context.Context, diff.StreamProcessor, map[string]typeurl.Any) (diff.StreamProcessor, error) {
			return endlessProcessor{endlessLayer()}, nil
		}))
	})
	ctx, cs := testkit.ContentStore(t)
	desc := writeBlob(t, ctx, cs, endlessMediaType, []byte("seed"))
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := NewDiffer(cs).Apply(ctx, desc, bindMount(t.TempDir(), false))
		done <- err
	}()
	time.Sleep(300 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if !errdefs.IsCanceled(err) {
			t.Errorf("cancelled Differ.Apply: %v, want Canceled", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Differ.Apply did not return within 20s of cancel")
	}
}

// An empty lower is no lower, as containerd's archive.WriteDiff(ctx, w, "", upper): the layer
// is the same bytes as containerd's.
func TestCompareWithoutLower(t *testing.T) {
	upper := t.TempDir()
	if err := os.MkdirAll(filepath.Join(upper, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(upper, "d", "f"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	var ours, theirs bytes.Buffer
	if _, err := Compare(context.Background(), "", upper, &ours, CompareOptions{Compression: CompressionNone}); err != nil {
		t.Fatalf("Compare with no lower: %v", err)
	}
	if err := archive.WriteDiff(context.Background(), &theirs, "", upper); err != nil {
		t.Fatalf("containerd WriteDiff: %v", err)
	}
	if !bytes.Equal(ours.Bytes(), theirs.Bytes()) || ours.Len() == 0 {
		t.Fatalf("layer differs from containerd's: %d vs %d bytes", ours.Len(), theirs.Len())
	}
}
