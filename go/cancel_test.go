package layerdiff

import (
	"context"
	"errors"
	"io"
	"sort"
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
