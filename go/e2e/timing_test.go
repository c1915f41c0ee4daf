package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestTiming times `ctr images import` of an image of real trees (one gzip layer;
// transfer service, overlayfs) in the three daemons, in one run on the same tmpfs, rounds alternating the order: the whole
// import as ctr sees it, and the unpack alone as the daemon logs it ("image unpacked"
// duration). The proxy's cost over the fork is its gRPC hop: requests, and every blob read
// through the daemon's content API. It fails only if a daemon fails; the numbers are logged.
func TestTiming(t *testing.T) {
	requireDaemons(t)
	const rounds = 3
	img, entries, err := bigImage(filepath.Join(env.tmp, "images", "big"))
	if err != nil {
		t.Fatal(err)
	}
	daemons := []*daemon{env.stock, env.fork, env.proxy}
	wall := map[daemonKind][]time.Duration{}
	unpack := map[daemonKind][]time.Duration{}
	for r := range rounds {
		for i := range daemons {
			d := daemons[(i+r)%len(daemons)]
			ns := fmt.Sprintf("timing-%d", r)
			start := time.Now()
			if _, stderr, err := d.ctr(ns, importArgs(img, "overlayfs", false)...); err != nil {
				t.Fatalf("%s: %v\n%s", d.kind, err, stderr)
			}
			wall[d.kind] = append(wall[d.kind], time.Since(start))
			u, err := lastUnpack(d.log)
			if err != nil {
				t.Fatalf("%s: %v", d.kind, err)
			}
			unpack[d.kind] = append(unpack[d.kind], u)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "import of %s (%d entries, %d MB of layer), transfer service, overlayfs, tmpfs; median of %d:\n",
		img.name, entries, img.layers[0].size>>20, rounds)
	fmt.Fprintf(&b, "  %-14s %12s %12s\n", "daemon", "ctr import", "unpack")
	for _, d := range daemons {
		fmt.Fprintf(&b, "  %-14s %12v %12v\n", d.kind, median(wall[d.kind]).Round(time.Millisecond), median(unpack[d.kind]).Round(time.Millisecond))
	}
	hop := median(unpack[proxy]) - median(unpack[fork])
	fmt.Fprintf(&b, "  proxy - fork: %v per unpack (the gRPC hop)", hop.Round(time.Millisecond))
	t.Log(b.String())
}

// bigImage is a one-layer image of real trees, 5000 entries or more.
func bigImage(dir string) (*testImage, int, error) {
	staging := filepath.Join(dir, "staging")
	entries, err := stageReal(staging, 5000)
	if err != nil {
		return nil, 0, err
	}
	layer, err := baseLayer(dir, staging)
	if err != nil {
		return nil, 0, err
	}
	img := &testImage{name: "docker.io/library/e2e:big", archive: filepath.Join(dir, "big.tar"), layers: []blob{layer}}
	if err := os.RemoveAll(staging); err != nil {
		return nil, 0, err
	}
	return img, entries, writeArchive(img)
}

var unpackedLine = regexp.MustCompile(`msg="image unpacked".* duration=([0-9.]+[a-zµ]+)`)

// lastUnpack is the duration of the newest "image unpacked" line of a daemon's log.
func lastUnpack(log string) (time.Duration, error) {
	b, err := os.ReadFile(log)
	if err != nil {
		return 0, err
	}
	m := unpackedLine.FindAllSubmatch(b, -1)
	if len(m) == 0 {
		return 0, fmt.Errorf("no \"image unpacked\" line in %s", log)
	}
	return time.ParseDuration(string(m[len(m)-1][1]))
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}
