package testkit

import (
	"os"
	"testing"
)

// RequireRootEnv names the variable that turns RequireRoot's skip into a failure.
const RequireRootEnv = "LAYERDIFF_REQUIRE_ROOT"

// RequireRoot stops a test that needs root when it is not running as root; needs says what
// for (mounts, mknod, chown, trusted.* xattrs). It skips loudly, so a run without root says
// what it did not test; with LAYERDIFF_REQUIRE_ROOT=1 it fails instead, for runs that must
// not pass by skipping. CI sets nothing: it runs as root, where RequireRoot does nothing.
func RequireRoot(t testing.TB, needs string) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv(RequireRootEnv) == "1" {
		t.Fatalf("this test needs root (%s) and %s=1 forbids skipping it: run `go test` as root", needs, RequireRootEnv)
	}
	t.Skipf("SKIPPED LOUDLY: this test needs root (%s); run `go test` as root (%s=1 makes this a failure)", needs, RequireRootEnv)
}
