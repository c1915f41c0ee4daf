package compare

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/layerdiff/layerdiff/go/internal/randtree"
	"github.com/layerdiff/layerdiff/go/internal/testkit"
)

// FuzzCompare: for any random tree pair randtree builds from the fuzz input (seed, sizes,
// and optionally a source-date-epoch), `layerdiff diff --compression none` writes the same
// bytes as containerd's archive.WriteDiff, with a descriptor that describes them. Coverage
// guidance comes from Go's side (continuity's double walk, containerd's change writer).
//
//	go test -run '^$' -fuzz '^FuzzCompare$' -fuzztime 5m -parallel 1 ./parity/compare
//
// Seeds: testdata/fuzz/FuzzCompare (a handful of randtree seeds and sizes).
func FuzzCompare(f *testing.F) {
	requireRootF(f)
	f.Fuzz(func(t *testing.T, seed int64, entries, changes, maxFileKiB uint8, epoch int64) {
		o := randtree.Options{
			Entries:     1 + int(entries)%fuzzMaxEntries,
			Changes:     int(changes) % fuzzMaxEntries,
			MaxFileSize: (1 + int(maxFileKiB)%fuzzMaxFileKiB) << 10,
		}
		lower, upper := filepath.Join(t.TempDir(), "lower"), filepath.Join(t.TempDir(), "upper")
		if err := randtree.GenerateWith(seed, lower, upper, o); err != nil {
			t.Fatal(err)
		}
		var sde *time.Time
		if epoch != 0 {
			// Around randtree's times (2022 ± 200 days), so that some are clamped.
			e := fuzzEpochBase.Add(time.Duration(epoch%(300*24)) * time.Hour)
			sde = &e
		}
		t.Logf("randtree seed %d, %+v, source-date-epoch %v", seed, o, sde)
		assertParity(t, lower, upper, sde)
	})
}

const (
	// Tree sizes stay small: Go's fuzzing engine kills a worker after 10 s on one input,
	// generating and diffing included, and a 150-entry pair took that long on a loaded
	// machine with coverage instrumentation.
	fuzzMaxEntries = 80
	fuzzMaxFileKiB = 32
)

var fuzzEpochBase = time.Date(2022, 1, 23, 12, 34, 56, 0, time.UTC)

func requireRootF(f *testing.F) {
	if os.Geteuid() != 0 {
		f.Skip("SKIPPED LOUDLY: FuzzCompare needs root (chown, mknod, security.capability)")
	}
}

// TestWriteFuzzSeeds (re)writes FuzzCompare's seeds: randtree's default sizes for a few
// seeds, small and large trees, and source-date-epochs.
//
//	FUZZ_WRITE_SEEDS=1 go test -run '^TestWriteFuzzSeeds$' ./parity/compare
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("FUZZ_WRITE_SEEDS") == "" {
		t.Skip("SKIPPED: writes the fuzz seed corpus only when FUZZ_WRITE_SEEDS=1")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzCompare")
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	type seed struct {
		seed                         int64
		entries, changes, maxFileKiB uint8
		epoch                        int64
	}
	seeds := []seed{{1, 60, 40, 40, 0}, {2, 60, 40, 40, 0}, {3, 60, 40, 40, 0}, {4, 60, 40, 40, 0},
		{5, 1, 0, 1, 0}, {6, 3, 5, 1, 0}, {7, 79, 79, 31, 0}, {8, 70, 20, 4, 0},
		{51, 60, 40, 40, 1}, {52, 60, 40, 40, -2000}, {53, 75, 75, 10, 3000}}
	for _, s := range seeds {
		name := fmt.Sprintf("randtree-%d-%d-%d-%d-%d", s.seed, s.entries, s.changes, s.maxFileKiB, s.epoch)
		if err := testkit.WriteCorpusEntry(dir, name, s.seed, s.entries, s.changes, s.maxFileKiB, s.epoch); err != nil {
			t.Fatal(err)
		}
	}
}
