package layerdiff

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"sort"
	"strings"
	"testing"
	"time"
)

// A cancelled Apply returns promptly even when its reader stalls (issue 10, finding 6):
// the reader here sends a tar header's worth of nothing and then blocks for good.
func TestApplyCancelWithStalledReader(t *testing.T) {
	var latencies []time.Duration
	for i := 0; i < 5; i++ {
		pr, pw := io.Pipe()
		go func() { _, _ = pw.Write(make([]byte, 100)) }() // then silence; never closed
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			_, err := Apply(ctx, t.TempDir(), pr, ApplyOptions{})
			done <- err
		}()
		time.Sleep(200 * time.Millisecond)
		cancel()
		start := time.Now()
		select {
		case err := <-done:
			latencies = append(latencies, time.Since(start))
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("run %d: got %v, want an error matching context.Canceled", i, err)
			}
		case <-time.After(2 * time.Second): // a hang guard, not a timing assertion
			t.Fatalf("run %d: Apply did not return within 2 s of the cancel", i)
		}
		pw.Close() // lets the feeder left in Read finish
	}
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	t.Logf("cancel to return, median of %d: %v (max %v)", len(latencies), latencies[len(latencies)/2], latencies[len(latencies)-1])
}

// stallingReader returns data, then blocks in Read until release is closed (at most stall),
// then reports EOF: a network source that stopped sending but did not hang up.
type stallingReader struct {
	data    []byte
	release chan struct{}
	stall   time.Duration
}

func (s *stallingReader) Read(p []byte) (int, error) {
	if len(s.data) > 0 {
		n := copy(p, s.data)
		s.data = s.data[n:]
		return n, nil
	}
	select {
	case <-s.release:
	case <-time.After(s.stall):
	}
	return 0, io.EOF
}

// corruptLayerStart is the start of a layer whose second header is garbage 16 KiB in, and
// long enough (300 KiB) for the core's first input chunk (256 KiB) to fill before r stalls.
func corruptLayerStart(t *testing.T) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	first := bytes.Repeat([]byte{1}, 16<<10)
	if err := tw.WriteHeader(&tar.Header{Name: "a", Mode: 0o644, Size: int64(len(first)), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(first); err != nil {
		t.Fatal(err)
	}
	if err := tw.Flush(); err != nil {
		t.Fatal(err)
	}
	b.Write(bytes.Repeat([]byte{'Z'}, 512))
	b.Write(make([]byte, (300<<10)-b.Len()))
	return b.Bytes()
}

// A corrupt layer fails Apply as soon as the core meets it, though r stalls (issue 10,
// finding 6): the core stops its own read of the pipe, and Apply does not wait for r.Read.
func TestApplyCorruptLayerWithStalledReader(t *testing.T) {
	const stall = 5 * time.Second
	data := corruptLayerStart(t)
	var latencies []time.Duration
	for i := 0; i < 5; i++ {
		r := &stallingReader{data: data, release: make(chan struct{}), stall: stall}
		start := time.Now()
		_, err := Apply(context.Background(), t.TempDir(), r, ApplyOptions{})
		took := time.Since(start)
		close(r.release)
		if err == nil {
			t.Fatalf("run %d: Apply of a corrupt layer succeeded", i)
		}
		if errors.Is(err, context.Canceled) || strings.Contains(err.Error(), "cancel") {
			t.Fatalf("run %d: got %v, want the layer's error", i, err)
		}
		if took >= 3*time.Second { // a hang guard well below the stall, not a timing target
			t.Fatalf("run %d: Apply returned after %v, the reader stalled for %v: it waited (%v)", i, took, stall, err)
		}
		latencies = append(latencies, took)
		if i == 0 {
			t.Logf("error: %v", err)
		}
	}
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	t.Logf("corrupt layer, reader stalled %v: returned after median %v (max %v)", stall, latencies[len(latencies)/2], latencies[len(latencies)-1])
}

// When r fails part way, the core sees a truncated layer; Apply reports r's error, the real
// cause, not the core's (which it no longer waits for when the core fails first, above).
func TestApplyReportsTheReadersError(t *testing.T) {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	data := bytes.Repeat([]byte{3}, 1<<20)
	if err := tw.WriteHeader(&tar.Header{Name: "f", Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(data); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("source went away")
	for i := 0; i < 20; i++ {
		_, err := Apply(context.Background(), t.TempDir(), io.MultiReader(bytes.NewReader(b.Bytes()[:300<<10]), failingReader{boom}), ApplyOptions{})
		if !errors.Is(err, boom) {
			t.Fatalf("run %d: got %v, want the reader's error", i, err)
		}
	}
}
