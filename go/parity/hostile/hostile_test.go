package hostile

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/layerdiff/layerdiff/go/internal/testkit"
	"github.com/layerdiff/layerdiff/go/internal/treecmp"
)

const (
	// seeds per whiteout mode.
	seeds = 300
	// layers stacked per seed (the next one only while both sides still agree).
	layersPerSeed = 3
	// an apply slower than this is a hang (layers are a few KiB).
	hangAfter = 60 * time.Second
)

// ---------------------------------------------------------------------------------------------
// The generator.

// names the generator uses; after every apply none of the distinctive ones may exist in / or
// /tmp.
var names = []string{"hx1", "hx2", "hx3", "nx1", "nx2", "out", "abs", "up", "upup", "self", "loop1",
	"loop2", "chain1", "dirlink", "flink", "rel", "fout", "outside"}

// strayNames are the distinctive ones among them (another process may well own a /tmp/out).
var strayNames = []string{"hx1", "hx2", "hx3", "nx1", "nx2", "loop1", "loop2", "chain1", "dirlink", "flink"}

// hostNames exist on every host; interesting as components, never checked for strays.
var hostNames = []string{"root", "tmp", "proc", "etc", "..", ".", ""}

type entry struct {
	hdr  tar.Header
	data []byte
}

func (e entry) String() string {
	h := e.hdr
	s := fmt.Sprintf("%q %q", string(rune(h.Typeflag)), h.Name)
	if h.Linkname != "" {
		s += fmt.Sprintf(" -> %q", h.Linkname)
	}
	s += fmt.Sprintf(" mode %o uid %d gid %d mtime %d", h.Mode, h.Uid, h.Gid, h.ModTime.UnixNano())
	if h.Typeflag == tar.TypeChar || h.Typeflag == tar.TypeBlock {
		s += fmt.Sprintf(" dev %d:%d", h.Devmajor, h.Devminor)
	}
	if len(e.data) > 0 {
		s += fmt.Sprintf(" data %d bytes", len(e.data))
	}
	keys := make([]string, 0, len(h.PAXRecords))
	for k := range h.PAXRecords {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		s += fmt.Sprintf(" pax %s=%q", k, h.PAXRecords[k])
	}
	if h.Format != tar.FormatUnknown {
		s += " format " + h.Format.String()
	}
	return s
}

type gen struct{ r *rand.Rand }

func (g *gen) pick(s []string) string { return s[g.r.Intn(len(s))] }
func (g *gen) chance(pct int) bool    { return g.r.Intn(100) < pct }

func (g *gen) component() string {
	switch r := g.r.Intn(100); {
	case r < 35:
		return g.pick([]string{"hx1", "hx2", "nx1", "nx2", "hx3"})
	case r < 57:
		return g.pick(names)
	case r < 72:
		return ".."
	case r < 77:
		return "."
	case r < 84:
		return g.pick(hostNames)
	case r < 90:
		return ".wh." + g.pick([]string{"hx1", "hx2", "out", "abs", "up"})
	case r < 95:
		return strings.Repeat("x", 1+g.r.Intn(120))
	default:
		// Not UTF-8, with a newline.
		return string([]byte{byte('a' + g.r.Intn(26)), 0xff, '\n'})
	}
}

func (g *gen) path() string {
	s := g.pick([]string{"", "", "", "", "/", "./", "../", "../../", "//", "/../"})
	n := 1 + g.r.Intn(4)
	for i := 0; i < n; i++ {
		if i > 0 {
			if g.chance(5) {
				s += "//"
			} else {
				s += "/"
			}
		}
		s += g.component()
	}
	if g.chance(5) {
		s += "/"
	}
	return s
}

func (g *gen) linkTarget() string {
	if g.chance(50) {
		return g.pick([]string{"/", "..", "../..", "../outside", "../outside/hx1", "/outside",
			"/proc/self/root", "/proc/self/cwd", "/proc/self/fd/3", "loop1", "hx1/../../outside",
			".", "self/self/..", "/etc/passwd", "out/hx2", "fout", "hx1", "hx3", ""})
	}
	return g.path()
}

func (g *gen) mode(typeflag byte) int64 {
	switch g.r.Intn(10) {
	case 0:
		return 0
	case 1:
		return 0o7777
	case 2:
		return 0o4755
	case 3:
		return int64(g.r.Intn(0o10000))
	}
	if typeflag == tar.TypeDir {
		return 0o755
	}
	return 0o644
}

func (g *gen) id() int {
	switch g.r.Intn(10) {
	case 0:
		return 65534
	case 1:
		return 0o7777777 + 5 // needs PAX or base-256
	case 2, 3:
		return 1000 + g.r.Intn(3)
	}
	return 0
}

func (g *gen) mtime() time.Time {
	switch g.r.Intn(10) {
	case 0:
		return time.Unix(0, 0)
	case 1:
		return time.Unix(-5, 500000000)
	case 2:
		return time.Unix(1, 123456789)
	case 3:
		return time.Unix(1<<40, 0)
	}
	return time.Unix(1600000000+int64(g.r.Intn(1000)), 0)
}

func (g *gen) xattrs(h *tar.Header) {
	if !g.chance(25) {
		return
	}
	if h.PAXRecords == nil {
		h.PAXRecords = map[string]string{}
	}
	for i := g.r.Intn(3); i >= 0; i-- {
		var k, v string
		switch r := g.r.Intn(50); {
		case r < 12:
			k, v = "user.a", "1"
		case r < 22:
			k, v = "user.big", strings.Repeat("v", 300)
		case r < 30:
			k, v = "trusted.overlay.opaque", "y"
		case r < 38:
			k, v = "trusted.x", "t"
		case r < 48:
			k, v = "security.test", "s"
		case r < 49: // fails with EINVAL, ending the layer
			k, v = "user.", "empty name"
		default:
			k, v = "system.posix_acl_access", "\x02\x00\x00\x00garbage"
		}
		h.PAXRecords["SCHILY.xattr."+k] = v
	}
}

func (g *gen) device() (int64, int64) {
	// Only device numbers that are harmless even if opened: null, zero, and absent ones.
	switch g.r.Intn(8) {
	case 0:
		return 1, 3
	case 1:
		return 1, 5
	case 2:
		return 4095, 0xfffff
	case 3:
		return 1 << 33, 1 // out of range
	case 4:
		return -3, 0 // negative
	case 5:
		return 0xfffff000, 0xffffff00
	}
	return 0, 0
}

func (g *gen) make(typeflag byte, name string) entry {
	h := tar.Header{
		Typeflag: typeflag,
		Name:     name,
		Mode:     g.mode(typeflag),
		Uid:      g.id(),
		Gid:      g.id(),
		ModTime:  g.mtime(),
	}
	switch g.r.Intn(10) {
	case 0:
		h.Format = tar.FormatPAX
	case 1:
		h.Format = tar.FormatGNU
	}
	g.xattrs(&h)
	var data []byte
	switch typeflag {
	case tar.TypeReg:
		data = make([]byte, []int{0, 1, 100, 511, 512, 513, 3000}[g.r.Intn(7)])
		g.r.Read(data)
		h.Size = int64(len(data))
	case tar.TypeLink:
		if g.chance(80) {
			h.Linkname = g.pick([]string{"hx3", "/hx3", "../hx3", "hx1/hx2", "dirlink/hx2", "flink",
				"hx2/hx3", "self/hx3", "up/hx3", "out/hx1", "rel/hx1", "chain1/hx1", "abs/etc/passwd",
				"fout"})
		} else {
			h.Linkname = g.linkTarget()
		}
	case tar.TypeSymlink:
		h.Linkname = g.linkTarget()
	case tar.TypeChar, tar.TypeBlock:
		h.Devmajor, h.Devminor = g.device()
	case tar.TypeXGlobalHeader:
		h = tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: name,
			PAXRecords: map[string]string{"path": g.path()}}
	}
	return entry{hdr: h, data: data}
}

func (g *gen) entry() entry {
	var typeflag byte
	switch r := g.r.Intn(100); {
	case r < 15:
		typeflag = tar.TypeDir
	case r < 35:
		typeflag = tar.TypeReg
	case r < 55:
		typeflag = tar.TypeSymlink
	case r < 65:
		typeflag = tar.TypeLink
	case r < 69:
		typeflag = tar.TypeChar
	case r < 71:
		typeflag = tar.TypeBlock
	case r < 74:
		typeflag = tar.TypeFifo
	case r < 76:
		typeflag = tar.TypeXGlobalHeader
	case r < 77:
		typeflag = []byte{'7', 'Z', 'V', 'D'}[g.r.Intn(4)]
	case r < 89:
		name := g.path()
		dir := name[:strings.LastIndex(name, "/")+1]
		wh := ".wh..wh..opq"
		if !g.chance(30) {
			wh = ".wh." + g.pick([]string{"hx1", "hx2", "hx3", "nx1", "nx2", "out", "abs", "up", "loop1",
				".wh.hx1", "hx1", "hx2", "nx1", "nx2", "hx1", "hx2", "nx1", "nx2", "", ".", ".."})
		}
		e := g.make(tar.TypeReg, dir+wh)
		e.data, e.hdr.Size = nil, 0
		return e
	case r < 95:
		typeflag = tar.TypeDir
	default:
		typeflag = tar.TypeReg
	}
	return g.make(typeflag, g.path())
}

func (g *gen) scenario() []entry {
	x := g.pick([]string{"hx1", "hx2", "hx3", "nd"})
	t := g.linkTarget()
	file := func(n string) entry { return g.make(tar.TypeReg, n) }
	dir := func(n string) entry { return g.make(tar.TypeDir, n) }
	sym := func(n, to string) entry {
		e := g.make(tar.TypeSymlink, n)
		e.hdr.Linkname = to
		return e
	}
	hard := func(n, to string) entry {
		e := g.make(tar.TypeLink, n)
		e.hdr.Linkname = to
		return e
	}
	switch g.r.Intn(8) {
	case 0: // a directory replaced by a symlink mid-layer, then written through
		return []entry{dir(x), file(x + "/f"), sym(x, t), file(x + "/hx1"), dir(x + "/hx2")}
	case 1: // a hardlink through a symlink
		return []entry{sym(x, t), hard("hl", x+"/hx1"), file("hl")}
	case 2: // whiteouts through a symlinked directory
		return []entry{sym(x, t), file(x + "/.wh.hx1"), file(x + "/.wh.hx2"), file(x + "/.wh..wh..opq")}
	case 3: // a chain ending anywhere
		return []entry{sym("c1", "c2"), sym("c2", "c3/../c4"), sym("c4", t), file("c1/hx1"), hard("c1/hx2", "c1/hx3")}
	case 4: // replace a hardlinked file, then white out the link
		return []entry{file(x), hard("hl2", x), file(x), file(".wh.hl2")}
	case 5: // an opaque directory after writes
		return []entry{dir(x), file(x + "/a"), file(x + "/.wh..wh..opq"), file(x + "/b"), sym(x+"/a", t)}
	case 6:
		if g.chance(30) { // a loop (always ends the layer)
			return []entry{sym("la", "lb/x"), sym("lb", "la/x"), file("la/f"), file("la/.wh.f")}
		}
		fallthrough
	default: // a symlinked parent swapped between entries of the same directory
		return []entry{dir("sw"), file("sw/hx1"), sym("sw", t), file("sw/hx1"), dir("sw"), file("sw/hx1")}
	}
}

func (g *gen) layer() []entry {
	var v []entry
	// Short layers often apply cleanly (so trees get compared); long ones dig deeper.
	n := 1 + g.r.Intn([]int{6, 25}[g.r.Intn(2)])
	for len(v) < n {
		if g.chance(25) {
			v = append(v, g.scenario()...)
		} else {
			v = append(v, g.entry())
		}
	}
	return v
}

// encode writes the entries with Go's tar writer (containerd's own); an entry the writer
// refuses in its requested format is retried in the format the writer picks, and dropped if
// it is refused again (the returned list is what the layer holds).
func encode(entries []entry) ([]byte, []entry) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	var kept []entry
	// Some write errors stick to a tar.Writer, so each entry is tried on a scratch writer first.
	fits := func(e entry) bool { return writeEntry(tar.NewWriter(io.Discard), e) == nil }
	for _, e := range entries {
		if !fits(e) {
			e.hdr.Format = tar.FormatUnknown
			if !fits(e) {
				continue
			}
		}
		if err := writeEntry(tw, e); err != nil {
			panic(err) // it fit a moment ago
		}
		kept = append(kept, e)
	}
	if err := tw.Close(); err != nil {
		panic(err)
	}
	return buf.Bytes(), kept
}

func writeEntry(tw *tar.Writer, e entry) error {
	h := e.hdr
	if err := tw.WriteHeader(&h); err != nil {
		return err
	}
	if len(e.data) > 0 {
		if _, err := tw.Write(e.data); err != nil {
			return err
		}
	}
	return nil
}

// ---------------------------------------------------------------------------------------------
// Twin sandboxes.

// populate builds <top>/outside (sentinels) and <top>/root (traps); targets are relative or
// "/" so both twins are identical.
func populate(t *testing.T, top string) {
	o, r := filepath.Join(top, "outside"), filepath.Join(top, "root")
	must := func(err error) {
		if err != nil {
			t.Helper()
			t.Fatal(err)
		}
	}
	for _, d := range []string{o, o + "/hx2", o + "/hx2/hx2", r, r + "/hx1", r + "/hx2"} {
		must(os.MkdirAll(d, 0o755))
	}
	for p, c := range map[string]string{"hx1": "sentinel hx1", "hx2/hx3": "sentinel hx2/hx3", "hx3": "sentinel hx3"} {
		must(os.WriteFile(filepath.Join(o, p), []byte(c), 0o644))
	}
	must(os.Symlink("/", o+"/abs"))
	must(os.Symlink("hx1", o+"/flink"))
	must(unix.Mkfifo(o+"/fifo", 0o600))
	for p, m := range map[string]uint32{"hx1": 0o640, "hx2": 0o750, "hx2/hx3": 0o4711, "hx3": 0o600} {
		must(os.Lchown(filepath.Join(o, p), 1234, 1235))
		must(unix.Chmod(filepath.Join(o, p), m))
	}
	must(unix.Lsetxattr(o+"/hx1", "user.sentinel", []byte("s1"), 0))
	// The overlay lowerdir (overlay mode passes it as the parent): directories whose
	// attributes new parents copy, a file that stops the search, a link out.
	l := o + "/lower"
	for d, m := range map[string]uint32{"": 0o755, "nx1": 0o700, "nx1/nx2": 0o1777, "hx1": 0o750, "nd": 0o711} {
		must(os.MkdirAll(filepath.Join(l, d), 0o755))
		must(unix.Chmod(filepath.Join(l, d), m))
		must(os.Lchown(filepath.Join(l, d), 4321, 4322))
	}
	must(unix.Lsetxattr(l+"/nx1", "user.lower", []byte("l1"), 0))
	must(unix.Lsetxattr(l+"/nx1", "trusted.lower", []byte("t1"), 0))
	must(os.WriteFile(l+"/nx2", []byte("file in lower"), 0o644))
	must(os.Symlink("/", l+"/abs"))
	must(os.Symlink("../hx2", l+"/up"))

	must(os.WriteFile(r+"/hx1/hx2", []byte("inside hx1/hx2"), 0o644))
	must(os.WriteFile(r+"/hx3", []byte("inside hx3"), 0o644))
	must(os.Link(r+"/hx3", r+"/hx2/hx3"))
	for _, l := range [][2]string{{"../outside", "out"}, {"/", "abs"}, {"..", "up"}, {"../..", "upup"},
		{".", "self"}, {"loop2", "loop1"}, {"loop1", "loop2"}, {"out", "chain1"}, {"hx1", "dirlink"},
		{"hx3", "flink"}, {"hx1/../../outside", "rel"}, {"../outside/hx1", "fout"}} {
		must(os.Symlink(l[0], filepath.Join(r, l[1])))
	}
	testkit.Settle(t, top)
}

// watch is what a write outside a twin's root would change: the twin directory and
// everything in it but the root (inode numbers, link counts and ctimes included), and which
// inode the root is.
type watch struct {
	outside *treecmp.Tree
	root    *treecmp.Entry
}

func watchTwin(top string) (watch, error) {
	outside, err := treecmp.Snapshot(top, "root")
	if err != nil {
		return watch{}, err
	}
	root, err := treecmp.Stat(filepath.Join(top, "root"))
	return watch{outside, root}, err
}

// changesSince lists what differs from an earlier watch of the same twin.
func (w watch) changesSince(before watch) []string {
	before.outside.Name, w.outside.Name = "before", "after"
	d := treecmp.Diff(before.outside, w.outside, treecmp.Options{Identity: true})
	if w.root.Type != before.root.Type || w.root.Ino != before.root.Ino {
		d = append(d, fmt.Sprintf("root replaced: was %v inode %d, now %v inode %d", before.root.Type, before.root.Ino, w.root.Type, w.root.Ino))
	}
	return d
}

// strays lists generator names present in /, /tmp and dir (should be none, ever).
func strays(dir string) []string {
	var v []string
	for _, d := range []string{"/", "/tmp", dir} {
		for _, n := range strayNames {
			if _, err := os.Lstat(filepath.Join(d, n)); err == nil {
				v = append(v, filepath.Join(d, n))
			}
		}
	}
	sort.Strings(v)
	return v
}

// ---------------------------------------------------------------------------------------------
// The test.

func TestHostileLayersMatchContainerd(t *testing.T) {
	testkit.RequireRoot(t, "mknod, chown, trusted.* xattrs")
	stats := map[string]int{}
	failures := 0
	n := int64(seeds)
	if v, err := strconv.ParseInt(os.Getenv("HOSTILE_SEEDS"), 10, 64); err == nil {
		n = v // a longer hunt: HOSTILE_SEEDS=5000 go test ./parity/hostile
	}
	for seed := int64(0); seed < n; seed++ {
		for _, mode := range []string{"remove", "overlay", "aufs"} {
			msgs, ok := runSeed(t, seed, mode, stats)
			if !ok {
				failures++
				t.Errorf("seed %d, %s whiteouts:\n%s", seed, mode, msgs)
				if failures >= 10 {
					t.Fatalf("stopping after %d failing seeds", failures)
				}
			}
		}
	}
	t.Logf("outcomes: %v", stats)
	// Both outcomes must be common, or the generator has degenerated.
	total := 0
	for _, n := range stats {
		total += n
	}
	if stats["both ok"] < total/8 || stats["both ok"] > total*4/5 {
		t.Errorf("generator out of balance: %v", stats)
	}
}

// runSeed applies the seed's layers to fresh twins; it returns a report and false on a
// broken promise.
func runSeed(t *testing.T, seed int64, mode string, stats map[string]int) (string, bool) {
	g := &gen{r: rand.New(rand.NewSource(seed))}
	return runLayers(t, seed, layersPerSeed, g.layer, mode, stats)
}

// runLayers applies up to n layers from next to fresh twins in whiteout mode "remove",
// "overlay" or "aufs" (odd seeds: with a lowerdir or ro branch as parent; aufs mode's oracle
// is containerd 1.7); it returns a report and false on a broken promise.
func runLayers(t *testing.T, seed int64, n int, next func() []entry, mode string, stats map[string]int) (string, bool) {
	overlay := mode == "overlay"
	base := t.TempDir()
	twins := [2]string{filepath.Join(base, "containerd"), filepath.Join(base, "layerdiff")}
	for _, top := range twins {
		populate(t, top)
	}
	var report strings.Builder
	for i := 0; i < n; i++ {
		layer, entries := encode(next())
		fmt.Fprintf(&report, "  layer %d:\n", i)
		for j, e := range entries {
			fmt.Fprintf(&report, "    %2d: %s\n", j, e)
		}
		strayBefore := strays(base)
		oursBefore, err := watchTwin(twins[1])
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		// Odd seeds give overlay and aufs mode a lowerdir as parent.
		var parents [2][]string
		if seed%2 == 1 {
			parents = [2][]string{{filepath.Join(twins[0], "outside", "lower")}, {filepath.Join(twins[1], "outside", "lower")}}
		}
		tc := time.Now()
		var want, got testkit.Result
		var tc2 time.Time
		if mode == "aufs" {
			want = testkit.ApplyContainerd17Aufs(t, filepath.Join(twins[0], "root"), layer, parents[0], hangAfter)
			tc2 = time.Now()
			got = testkit.ApplyOursAufs(t, filepath.Join(twins[1], "root"), layer, parents[1], hangAfter)
		} else {
			want = testkit.ApplyContainerd(t, filepath.Join(twins[0], "root"), layer, overlay, parents[0], hangAfter)
			tc2 = time.Now()
			got = testkit.ApplyOurs(t, filepath.Join(twins[1], "root"), layer, overlay, parents[1], hangAfter)
		}
		if os.Getenv("HOSTILE_VERBOSE") != "" {
			t.Logf("containerd %v, layerdiff %v", tc2.Sub(tc), time.Since(tc2))
		}
		fmt.Fprintf(&report, "  containerd: %v\n  layerdiff:  %v\n", errOr(want), errOr(got))
		if os.Getenv("HOSTILE_VERBOSE") != "" {
			t.Logf("seed %d layer %d %s: containerd: %s", seed, i, mode, errOr(want))
		}

		var problems []string
		oursAfter, err := watchTwin(twins[1])
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range oursAfter.changesSince(oursBefore) {
			problems = append(problems, "layerdiff changed something outside the root: "+d)
		}
		if s := strays(base); fmt.Sprint(s) != fmt.Sprint(strayBefore) {
			problems = append(problems, fmt.Sprintf("written outside the sandbox: %v", s))
		}
		if got.Err != nil && (errors.Is(got.Err, testkit.ErrHang) || errors.Is(got.Err, testkit.ErrCrash) ||
			strings.Contains(got.Err.Error(), "nothing on stderr") || strings.Contains(got.Err.Error(), "internal error")) {
			problems = append(problems, "layerdiff broke: "+got.Err.Error())
		}
		if mode == "aufs" && want.Err == nil && got.Err != nil && fixedSince17(got.Err) {
			// containerd 1.7 truncates device numbers to 32 bits; v2 refuses them, and aufs
			// mode keeps v2's checks (docs/deviations.md): counted as both refusing.
			want.Err = errors.New("refused by containerd v2")
			stats["containerd 1.7 ok, refused as by v2"]++
		}
		agree := false
		switch {
		case want.Err == nil && got.Err != nil:
			stats["containerd ok, layerdiff failed"]++
			problems = append(problems, "containerd applied the layer, layerdiff refused it")
		case want.Err == nil:
			stats["both ok"]++
			if want.Digest != got.Digest || want.Size != got.Size {
				problems = append(problems, fmt.Sprintf("descriptor: containerd %s/%d, layerdiff %s/%d", want.Digest, want.Size, got.Digest, got.Size))
			}
			diffs, err := treecmp.Compare(twins[0], twins[1], treecmp.Options{FreshSince: start.Add(-time.Second)})
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range diffs {
				problems = append(problems, "trees differ: "+d)
			}
			agree = len(diffs) == 0
		case got.Err == nil:
			// Allowed: containerd refused, we applied, nothing outside changed (checked above).
			stats["containerd failed, layerdiff ok"]++
			t.Logf("seed %d layer %d %s: containerd refused (%v), layerdiff applied it (inside the root)", seed, i, mode, want.Err)
			if os.Getenv("HOSTILE_VERBOSE") != "" {
				t.Log(report.String())
			}
		default:
			stats["both failed"]++
		}
		if len(problems) > 0 {
			return fmt.Sprintf("  %s\n%s", strings.Join(problems, "\n  "), report.String()), false
		}
		if !agree {
			break
		}
	}
	return "", true
}

// fixedSince17 says whether layerdiff refused a layer for a check containerd v2 has and 1.7
// lacks.
func fixedSince17(err error) bool {
	return strings.Contains(err.Error(), "device number") && strings.Contains(err.Error(), "out of range")
}

func errOr(r testkit.Result) string {
	if r.Err != nil {
		return "error: " + r.Err.Error()
	}
	return "ok " + r.Digest
}

// TestDeepNamesMatchContainerd: names of very many components (PAX paths may be long) apply
// or fail as containerd's do, never crash, never write outside.
func TestDeepNamesMatchContainerd(t *testing.T) {
	testkit.RequireRoot(t, "mknod, chown, trusted.* xattrs")
	// Odd indexes give overlay mode a lowerdir, whose lookups cost O(depth²) per entry in
	// containerd and in layerdiff alike (1000 levels: ~10 s each), so those stay shallower.
	names := []string{
		strings.Repeat("a/", 2040) + "f", // past PATH_MAX with the root's own path
		strings.Repeat("nx1/", 200) + "f",
		strings.Repeat("a/", 200000) + "f",
		strings.Repeat("self/", 1000) + "f",
		strings.Repeat("../", 50000) + strings.Repeat("a/", 1500) + "f",
	}
	stats := map[string]int{}
	for i, name := range names {
		for _, mode := range []string{"remove", "overlay"} {
			layer := []entry{
				{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: 1, ModTime: time.Unix(1600000000, 0)}, data: []byte("x")},
				{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name + "d/", Mode: 0o755, ModTime: time.Unix(1600000000, 0)}},
			}
			once := false
			next := func() []entry {
				if once {
					return nil
				}
				once = true
				return layer
			}
			t0 := time.Now()
			msgs, ok := runLayers(t, int64(i), 1, next, mode, stats)
			t.Logf("name #%d %s: %v", i, mode, time.Since(t0))
			if !ok {
				if len(msgs) > 3000 {
					msgs = msgs[:1500] + " ... " + msgs[len(msgs)-1500:]
				}
				t.Errorf("name #%d (%d bytes), %s:\n%s", i, len(name), mode, msgs)
			}
		}
	}
	t.Logf("outcomes: %v", stats)
}
