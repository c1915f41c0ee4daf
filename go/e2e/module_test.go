package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const freshMain = `package main

import (
	"bytes"
	"context"
	"fmt"
	"os"

	layerdiff "github.com/layerdiff/layerdiff/go"
)

// Diffs two directories and applies the diff to a third: the library works, not only links.
func main() {
	var layer bytes.Buffer
	res, err := layerdiff.Compare(context.Background(), os.Args[1], os.Args[2], &layer, layerdiff.CompareOptions{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if _, err := layerdiff.Apply(context.Background(), os.Args[3], &layer, layerdiff.ApplyOptions{}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(layerdiff.Version(), res.DiffID)
}
`

// TestFreshModule: a Go program in a new module outside this checkout that requires the
// layerdiff module (through a replace to a path: there is no registry copy) builds with
// nothing but the installed library (pkg-config), needs no liblayerdiff.so at run time, and
// works. Go's build cache does not key on pkg-config's output, so a define that changes every
// run makes the cgo compile (which runs pkg-config) happen now, not come from an earlier
// build (a cache of its own would rebuild the standard library: minutes).
func TestFreshModule(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	module := filepath.Dir(wd) // go/
	dir := t.TempDir()
	goMod := "module example.com/fresh\n\ngo 1.26\n\nrequire github.com/layerdiff/layerdiff/go v0.0.0\n\nreplace github.com/layerdiff/layerdiff/go => " + module + "\n"
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(goMod), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(freshMain), 0o644); err != nil {
		t.Fatal(err)
	}
	// The new module needs what the layerdiff module needs: its go.sum carries their hashes, so
	// the build (-mod=mod adds the requirements it imports) verifies them locally instead of
	// asking sum.golang.org, which CI cannot reach (only the package registries). `go mod tidy`
	// is not run: it wants the modules of the dependencies' own tests, which nothing downloads.
	sums, err := os.ReadFile(filepath.Join(module, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go.sum"), sums, 0o644); err != nil {
		t.Fatal(err)
	}
	env := []string{
		"GOFLAGS=-mod=mod",
		"GOPROXY=off", // what the module needs is in the module cache (go mod download)
		fmt.Sprintf("CGO_CFLAGS=-O2 -g -DFRESH_MODULE_TEST_RUN=%d", time.Now().UnixNano()),
		"CGO_LDFLAGS=",
	}
	run := func(name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	run("go", "build", "-o", "fresh", ".")
	if ldd, err := exec.Command("ldd", filepath.Join(dir, "fresh")).CombinedOutput(); err == nil && strings.Contains(string(ldd), "liblayerdiff") {
		t.Errorf("the binary needs liblayerdiff at run time:\n%s", ldd)
	}
	lower, upper, target := t.TempDir(), t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(upper, "hello"), []byte("world\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := run(filepath.Join(dir, "fresh"), lower, upper, target)
	if !strings.Contains(out, "sha256:") {
		t.Errorf("fresh program printed %q", out)
	}
	if b, err := os.ReadFile(filepath.Join(target, "hello")); err != nil || string(b) != "world\n" {
		t.Errorf("applied tree: %q, %v", b, err)
	}
}
