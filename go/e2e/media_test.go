package e2e

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
)

// TestStreamProcessors: layers whose media type only a stream processor turns into a tar
// (as encrypted layers). "handled": the fork applies it with the daemon's processor,
// layerdiff-diffd with the one its --containerd-config names; the trees equal the stock
// daemon's. "daemon-only" (a processor diffd was not given): the fork applies it; the proxy
// fails it in one line naming the media type, through containerd's applier, as a daemon
// without that processor would.
func TestStreamProcessors(t *testing.T) {
	requireDaemons(t)
	const sn = "overlayfs"
	for _, img := range []*testImage{env.images.handled, env.images.daemonOnly} {
		tag := img.name[strings.LastIndex(img.name, ":")+1:]
		ref := importImage(t, env.stock, "ref-"+tag, img, sn, false)
		for _, d := range []*daemon{env.fork, env.proxy} {
			for _, local := range []bool{false, true} {
				t.Run(fmt.Sprintf("%s/%s/%s", tag, d.kind, mode(local)), func(t *testing.T) {
					ns := fmt.Sprintf("%s-%s", tag, mode(local))
					before := d.counters(t)
					if d.kind == proxy && img == env.images.daemonOnly {
						stderr := importFails(t, d, ns, img, sn, local)
						if !strings.Contains(stderr, "no processor for media-type") || !strings.Contains(stderr, daemonOnlyMediaType) {
							t.Errorf("want containerd's no-processor error for %s, got %q", daemonOnlyMediaType, stderr)
						}
						wantCounts(t, d, before, map[string]int{"applies/ok": 1, "applies/fallback": 1})
						return
					}
					tree := importImage(t, d, ns, img, sn, local)
					wantCounts(t, d, before, map[string]int{"applies/ok": len(img.layers)})
					sameTree(t, fmt.Sprintf("%s: stock walking vs %s (%s)", tag, d.kind, mode(local)), ref, tree)
				})
			}
		}
	}
}

// TestBadLayers: a layer of a media type nobody handles, and a corrupt layer (a broken tar
// header inside valid gzip), fail the import in every daemon and mode with one line on
// ctr's stderr. The unknown media type falls back to containerd's applier (walking's): the
// error is the stock daemon's, word for word. The corrupt layer is layerdiff's error.
func TestBadLayers(t *testing.T) {
	requireDaemons(t)
	const sn = "overlayfs"
	// The unpack's snapshot key is random.
	key := regexp.MustCompile(`extract-[0-9]+-[A-Za-z0-9_-]+`)
	for _, c := range []struct {
		img    *testImage
		result string // the counter the bad layer moves in fork and proxy
	}{
		{env.images.unknown, "applies/fallback"},
		{env.images.corrupt, "applies/error"},
	} {
		tag := c.img.name[strings.LastIndex(c.img.name, ":")+1:]
		for _, local := range []bool{false, true} {
			stock := key.ReplaceAllString(importFails(t, env.stock, tag+"-"+mode(local), c.img, sn, local), "extract-KEY")
			t.Logf("stock %s %s: %s", tag, mode(local), stock)
			for _, d := range []*daemon{env.fork, env.proxy} {
				t.Run(fmt.Sprintf("%s/%s/%s", tag, d.kind, mode(local)), func(t *testing.T) {
					before := d.counters(t)
					got := key.ReplaceAllString(importFails(t, d, tag+"-"+mode(local), c.img, sn, local), "extract-KEY")
					t.Logf("%s: %s", d.kind, got)
					wantCounts(t, d, before, map[string]int{"applies/ok": 1, c.result: 1})
					switch {
					case c.img == env.images.unknown && got != stock:
						t.Errorf("want the stock daemon's error:\n%s", stock)
					case c.img == env.images.corrupt && !strings.Contains(got, "layerdiff apply: invalid archive"):
						t.Errorf("want layerdiff's invalid-archive error")
					}
				})
			}
		}
	}
}

// importFails runs an import that must fail and returns ctr's error, which must be one line
// (beside the lines of ctr's own log, which start with time=).
func importFails(t *testing.T, d *daemon, ns string, img *testImage, sn string, local bool) string {
	t.Helper()
	_, stderr, err := d.ctr(ns, importArgs(img, sn, local)...)
	if err == nil {
		t.Fatalf("%s: importing %s (%s) succeeded", d.kind, img.name, mode(local))
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimRight(stderr, "\n"), "\n") {
		if !strings.HasPrefix(l, "time=") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "ctr: ") {
		t.Errorf("%s: ctr's error is %d lines, want one:\n%s", d.kind, len(lines), stderr)
	}
	return strings.Join(lines, "\n")
}
