package overlayops

import (
	"bufio"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestRngVectors: the PRNG's first outputs are the Rust one's, as tests/overlay_kernel.rs
// pinned them in testdata/traces.txt.
func TestRngVectors(t *testing.T) {
	f, err := os.Open("testdata/traces.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) == 0 || fields[0] != "rng" {
			continue
		}
		seed, err := strconv.ParseUint(fields[1], 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		r := NewRng(seed)
		for _, want := range fields[2:] {
			if got := fmt.Sprintf("%016x", r.Next()); got != want {
				t.Fatalf("seed %d: %s, the Rust PRNG gives %s", seed, got, want)
			}
		}
		n++
	}
	if n == 0 {
		t.Fatal("no rng vectors in testdata/traces.txt")
	}
}

// TestPathOrder: paths sort as Rust's PathBuf does, component by component ("a/x" before
// "a b", where a byte-wise sort puts "a b" first).
func TestPathOrder(t *testing.T) {
	p := []string{"/m/a b", "/m/a/x", "/m/a.b", "/m/a", "/m/\u00e9t\u00e9", "/m/z/a", "/m/f-1"}
	slices.SortFunc(p, pathLess)
	want := []string{"/m/a", "/m/a/x", "/m/a b", "/m/a.b", "/m/f-1", "/m/z/a", "/m/\u00e9t\u00e9"}
	if !slices.Equal(p, want) {
		t.Fatalf("%q, want %q", p, want)
	}
}

// TestWithExtension: Path::with_extension("new") for the generator's names.
func TestWithExtension(t *testing.T) {
	for in, want := range map[string]string{"/m/a": "/m/a.new", "/m/a.b": "/m/a.new", "/m/d/a b": "/m/d/a b.new", "/m/f-1": "/m/f-1.new"} {
		if got := withExtension(in); got != want {
			t.Errorf("%s: %s, want %s", in, got, want)
		}
	}
}
