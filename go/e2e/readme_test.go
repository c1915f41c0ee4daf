package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// readmeBlock returns the toml block that follows marker in the repository's README.
func readmeBlock(t *testing.T, marker string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(b), "<!-- e2e: "+marker+" -->\n```toml\n")
	if !ok {
		t.Fatalf("README has no toml block after <!-- e2e: %s -->", marker)
	}
	block, _, ok := strings.Cut(after, "```")
	if !ok {
		t.Fatalf("README's %s block does not end", marker)
	}
	return block
}

// TestREADMEConfigs: the README's configs, as a user copies them (only the paths of this
// test added), start their daemon without a migration or "multiple differs" warning, and
// layerdiff applies every layer of an import through the transfer service and with --local.
func TestREADMEConfigs(t *testing.T) {
	requireDaemons(t)
	img := env.images.full
	ref := importImage(t, env.stock, "readme-ref", img, "overlayfs", false)
	for _, c := range []struct {
		marker string
		kind   daemonKind
		active string // logged once at info level at startup
	}{
		{"fork config", fork, `msg="layerdiff differ active"`},
		{"proxy config", proxy, `msg="layerdiff-diffd serving the Diff API"`},
	} {
		t.Run(c.kind.String(), func(t *testing.T) {
			d, err := startDaemon(t.Context(), env.bins, env.tmp, c.kind, daemonOptions{readme: readmeBlock(t, c.marker)})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if err := d.stop(); err != nil {
					t.Error(err)
				}
			})
			if n := d.logCount(c.active); n != 1 {
				t.Errorf("%d %s lines, want one", n, c.active)
			}
			for _, warning := range []string{"Configuration migrated", "multiple differs match", "level=error"} {
				if d.logCount(warning) > 0 {
					t.Errorf("the log has %q:\n%s", warning, tail(d.log, 40))
				}
			}
			for _, local := range []bool{false, true} {
				logged := d.logCount("diff applied (layerdiff)")
				tree := importImage(t, d, "readme-"+mode(local), img, "overlayfs", local)
				if n := d.logCount("diff applied (layerdiff)") - logged; n != len(img.layers) {
					t.Errorf("%s: layerdiff applied %d of %d layers", mode(local), n, len(img.layers))
				}
				sameTree(t, "stock walking vs the README's "+c.marker+" ("+mode(local)+")", ref, tree)
			}
		})
	}
}
