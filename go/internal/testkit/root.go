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
	msg := "SKIPPED LOUDLY: this test needs root (" + needs + "); run `go test` as root"
	if os.Getenv(RequireRootEnv) == "1" {
		t.Fatalf("%s (%s=1 makes this a failure)", msg, RequireRootEnv)
	}
	t.Skip(msg + " (" + RequireRootEnv + "=1 makes this a failure)")
}
