package testkit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The aufs-mode oracle is containerd 1.7 itself (go/oracle/containerd17, a module of its own
// so that containerd 1.x stays out of go/go.mod), built once per test process.
var containerd17 struct {
	once sync.Once
	path string
	err  error
}

// Containerd17Bin is the containerd 1.7 aufs applier (go/oracle/containerd17):
// $LAYERDIFF_CONTAINERD17_BIN, or built into target/oracle/ on first use.
func Containerd17Bin(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("LAYERDIFF_CONTAINERD17_BIN"); p != "" {
		return p
	}
	containerd17.once.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		goRoot := filepath.Join(filepath.Dir(file), "..", "..")
		out := filepath.Join(goRoot, "..", "target", "oracle", "containerd17")
		cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", out, ".")
		cmd.Dir = filepath.Join(goRoot, "oracle", "containerd17")
		// Pure Go: no need for the cgo flags the tests of layerdiff itself are built with.
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if msg, err := cmd.CombinedOutput(); err != nil {
			containerd17.err = fmt.Errorf("building the containerd 1.7 oracle in %s: %v\n%s", cmd.Dir, err, msg)
			return
		}
		containerd17.path = out
	})
	if containerd17.err != nil {
		t.Fatal(containerd17.err)
	}
	return containerd17.path
}

// ApplyContainerd17Aufs applies layer onto root as containerd 1.7's applier does on a single
// aufs mount (archive.Apply with AufsConvertWhiteout, the ro branches as parents). A run
// longer than hangAfter fails the test.
func ApplyContainerd17Aufs(t testing.TB, root string, layer []byte, parents []string, hangAfter time.Duration) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hangAfter)
	defer cancel()
	cmd := exec.CommandContext(ctx, Containerd17Bin(t), append([]string{root}, parents...)...)
	cmd.Stdin = bytes.NewReader(layer)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("containerd 1.7's archive.Apply hung on %s", root)
	}
	if err != nil {
		if ee := (*exec.ExitError)(nil); errors.As(err, &ee) && ee.ExitCode() == 1 {
			return Result{Err: errors.New(strings.TrimSpace(stderr.String()))}
		}
		t.Fatalf("containerd 1.7 oracle: %v: %s", err, stderr.String())
	}
	f := strings.Fields(stdout.String())
	if len(f) != 2 {
		t.Fatalf("containerd 1.7 oracle printed %q", stdout.String())
	}
	size, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		t.Fatalf("containerd 1.7 oracle printed %q: %v", stdout.String(), err)
	}
	return Result{Digest: f[0], Size: size}
}

// ApplyOursAufs runs `layerdiff apply --whiteouts aufs` with the ro branches as parents, as
// [ApplyOurs] does for the other modes.
func ApplyOursAufs(t testing.TB, root string, layer []byte, parents []string, hangAfter time.Duration) Result {
	t.Helper()
	return applyCLI(t, root, layer, "aufs", parents, hangAfter)
}
