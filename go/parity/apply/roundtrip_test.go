package apply

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/pkg/archive"
	"github.com/opencontainers/go-digest"

	"github.com/layerdiff/layerdiff/go/internal/randtree"
	"github.com/layerdiff/layerdiff/go/internal/testkit"
	"github.com/layerdiff/layerdiff/go/internal/treecmp"
)

// TestRoundTrip: apply(diff(lower, upper)) onto a copy of lower equals upper, for seeded random
// tree pairs, through the CLI (both halves are layerdiff). What a layer cannot carry is left
// out of the comparison: sub-second mtimes, xattrs other than security.capability, sockets,
// and the root directory's own times. Where containerd's own round trip (WriteDiff, then
// Apply) cannot reproduce upper either (times before 1970 become 0; a same-size content change
// with equal non-zero mtime nanoseconds is not seen by the double walk), we require exactly
// containerd's result: our tree must equal containerd's round-trip tree in every case.
func TestRoundTrip(t *testing.T) {
	testkit.RequireRoot(t, needsRoot)
	bin := testkit.LayerdiffBin(t)
	for seed := int64(1); seed <= 16; seed++ {
		for _, comp := range []string{"gzip", "zstd", "none"} {
			if comp != "gzip" && seed > 4 {
				continue
			}
			t.Run(fmt.Sprintf("seed%d-%s", seed, comp), func(t *testing.T) {
				work := t.TempDir()
				lower, upper, target := filepath.Join(work, "lower"), filepath.Join(work, "upper"), filepath.Join(work, "target")
				if err := randtree.Generate(seed, lower, upper); err != nil {
					t.Fatal(err)
				}
				if err := os.MkdirAll(target, 0o755); err != nil {
					t.Fatal(err)
				}
				testkit.CopyTree(t, lower, target)
				layer := filepath.Join(work, "layer")
				out, err := exec.Command(bin, "diff", "--compression", comp, lower, upper, "-o", layer).Output()
				if err != nil {
					t.Fatalf("layerdiff diff: %v", err)
				}
				var d struct{ DiffID string }
				if err := json.Unmarshal(out, &d); err != nil {
					t.Fatalf("diff output %q: %v", out, err)
				}
				out, err = exec.Command(bin, "apply", layer, target).Output()
				if err != nil {
					t.Fatalf("layerdiff apply: %v", err)
				}
				var a struct{ Digest string }
				if err := json.Unmarshal(out, &a); err != nil {
					t.Fatalf("apply output %q: %v", out, err)
				}
				if a.Digest != d.DiffID {
					t.Errorf("apply digest %s != diff's diffID %s", a.Digest, d.DiffID)
				}
				// containerd's own round trip onto another copy of lower.
				ctrTarget := filepath.Join(work, "containerd-target")
				if err := os.MkdirAll(ctrTarget, 0o755); err != nil {
					t.Fatal(err)
				}
				testkit.CopyTree(t, lower, ctrTarget)
				var ctrLayer bytes.Buffer
				if err := archive.WriteDiff(context.Background(), &ctrLayer, lower, upper); err != nil {
					t.Fatal(err)
				}
				if want := digest.FromBytes(ctrLayer.Bytes()).String(); want != d.DiffID {
					t.Errorf("diffID %s, containerd's WriteDiff %s", d.DiffID, want)
				}
				if _, err := archive.Apply(context.Background(), ctrTarget, &ctrLayer); err != nil {
					t.Fatal(err)
				}
				same, err := treecmp.Compare(ctrTarget, target, treecmp.Options{IgnoreRootTimes: true})
				if err != nil {
					t.Fatal(err)
				}
				if len(same) > 0 {
					t.Errorf("our round trip differs from containerd's:\n%s", strings.Join(same, "\n"))
				}
				opts := treecmp.Options{
					IgnoreRootTimes: true,
					MtimeSeconds:    true,
					Xattrs:          []string{"security.capability"},
					IgnoreSockets:   true,
				}
				ours, err := treecmp.Compare(upper, target, opts)
				if err != nil {
					t.Fatal(err)
				}
				theirs, err := treecmp.Compare(upper, ctrTarget, opts)
				if err != nil {
					t.Fatal(err)
				}
				if strings.Join(ours, "\n") != strings.Join(theirs, "\n") {
					t.Errorf("apply(diff(lower, upper)) differs from upper beyond containerd's own round trip:\nours:\n%s\ncontainerd's:\n%s",
						strings.Join(ours, "\n"), strings.Join(theirs, "\n"))
				}
				if len(ours) > 0 {
					t.Logf("%d differences from upper that containerd's round trip shares (layer limits)", len(ours))
				}
			})
		}
	}
}
