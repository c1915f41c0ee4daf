// Package testkit is what every Go test of layerdiff shares: the root policy (RequireRoot),
// content stores and tree copies, finding the CLI under test, twin-tree times, and the apply
// harness the parity packages run both appliers through.
//
// Root policy: tests that need root call RequireRoot, which skips loudly when not root, or
// fails when LAYERDIFF_REQUIRE_ROOT=1 is set. CI sets nothing: it runs the tests as root.
package testkit

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// LayerdiffBin is the CLI under test: $LAYERDIFF_BIN, or the release build of this repository
// (`make build`).
func LayerdiffBin(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("LAYERDIFF_BIN"); p != "" {
		return p
	}
	_, file, _, _ := runtime.Caller(0)
	p := filepath.Join(filepath.Dir(file), "..", "..", "..", "target", "release", "layerdiff")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("layerdiff CLI not found at %s (run `make build` or set LAYERDIFF_BIN): %v", p, err)
	}
	return p
}

// FixedTime is the time Settle gives every path.
var FixedTime = time.Unix(1700000000, 123456789)

// Settle gives every path under dir FixedTime (children before parents, symlinks themselves),
// so twin trees built one after the other start out identical.
func Settle(t testing.TB, dir string) {
	t.Helper()
	var paths []string
	filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err == nil {
			paths = append(paths, p)
		}
		return nil
	})
	ts := []unix.Timespec{unix.NsecToTimespec(FixedTime.UnixNano()), unix.NsecToTimespec(FixedTime.UnixNano())}
	for i := len(paths) - 1; i >= 0; i-- {
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, paths[i], ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			t.Fatal(err)
		}
	}
}
