// Package randtree builds seeded random pairs of directory trees (a lower tree and an upper
// tree derived from it by random changes) for parity tests between layerdiff and containerd.
//
// The trees exercise what layer diffs care about: regular files of varied sizes, directories,
// symlinks (also dangling and non-ASCII), hardlink groups across directories, fifos, character
// and block devices, modes with setuid/setgid/sticky bits, owners beyond 2^21, mtimes with
// and without nanoseconds (so that both content comparison and timestamp comparison paths of
// the double walk are hit), security.capability xattrs, long and non-ASCII names, deletions
// of files and whole trees, and type replacements. Generate must run as root.
package randtree

import (
	"fmt"
	"math/rand"
	randv2 "math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/containerd/continuity/fs"
	"golang.org/x/sys/unix"
)

// Options tunes the size of the generated trees.
type Options struct {
	// Entries is the approximate number of entries in the lower tree.
	Entries int
	// MaxFileSize bounds regular file sizes.
	MaxFileSize int
	// Changes is the approximate number of random changes applied to make the upper tree.
	Changes int
}

// DefaultOptions are small trees that still hit every rule.
var DefaultOptions = Options{Entries: 60, MaxFileSize: 40 << 10, Changes: 40}

// Generate fills the empty or missing directories lower and upper with a random tree and a
// changed copy of it, determined by seed.
func Generate(seed int64, lower, upper string) error {
	return GenerateWith(seed, lower, upper, DefaultOptions)
}

// GenerateWith is Generate with explicit sizes.
func GenerateWith(seed int64, lower, upper string, o Options) error {
	g := &gen{r: rand.New(rand.NewSource(seed)), o: o}
	for _, d := range []string{lower, upper} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	g.root = lower
	for i := 0; i < o.Entries; i++ {
		if err := g.addRandom(); err != nil {
			return fmt.Errorf("randtree seed %d: lower: %w", seed, err)
		}
	}
	if err := g.fixDirTimes(lower); err != nil {
		return err
	}
	if err := fs.CopyDir(upper, lower); err != nil {
		return fmt.Errorf("randtree seed %d: copy: %w", seed, err)
	}
	g.root = upper
	for i := 0; i < o.Changes; i++ {
		if err := g.changeRandom(); err != nil {
			return fmt.Errorf("randtree seed %d: upper: %w", seed, err)
		}
	}
	return g.fixDirTimes(upper)
}

type gen struct {
	r    *rand.Rand
	o    Options
	root string
	n    int
}

// Name pieces: plain, long, non-ASCII (valid and invalid UTF-8), with dashes and dots that sort
// around '/'.
var nameStyles = []func(g *gen) string{
	func(g *gen) string { return fmt.Sprintf("f%d", g.next()) },
	func(g *gen) string { return fmt.Sprintf("f%d", g.next()) },
	func(g *gen) string { return fmt.Sprintf("d-%d", g.next()) },
	func(g *gen) string { return fmt.Sprintf("d.%d", g.next()) },
	func(g *gen) string { return fmt.Sprintf("caf\u00e9-%d", g.next()) },
	func(g *gen) string { return fmt.Sprintf("bad\xff\xfe-%d", g.next()) },
	func(g *gen) string { return fmt.Sprintf("%s-%d", strings.Repeat("l", 40+g.r.Intn(80)), g.next()) },
	func(g *gen) string { return fmt.Sprintf("sp ace %d", g.next()) },
}

func (g *gen) next() int { g.n++; return g.n }

func (g *gen) name() string { return nameStyles[g.r.Intn(len(nameStyles))](g) }

// entries lists every path under root (relative, "" excluded), sorted, optionally only dirs.
func (g *gen) entries(dirsOnly bool) []string {
	var out []string
	_ = filepath.Walk(g.root, func(p string, fi os.FileInfo, err error) error {
		if err != nil || p == g.root {
			return nil
		}
		if dirsOnly && !fi.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(g.root, p)
		out = append(out, rel)
		return nil
	})
	sort.Strings(out)
	return out
}

func (g *gen) pick(list []string) string {
	if len(list) == 0 {
		return ""
	}
	return list[g.r.Intn(len(list))]
}

// parent picks an existing directory (or the root) whose path stays well below PATH_MAX.
func (g *gen) parent() string {
	dirs := append([]string{""}, g.entries(true)...)
	for i := 0; i < 5; i++ {
		d := g.pick(dirs)
		if len(d) < 600 {
			return d
		}
	}
	return ""
}

var epochBase = time.Date(2022, 1, 23, 12, 34, 56, 0, time.UTC).Unix()

// randTime returns whole-second times half of the time so that the double walk compares
// contents, and nanosecond times otherwise; rarely before 1970 or far in the future.
func (g *gen) randTime() time.Time {
	sec := epochBase + g.r.Int63n(400*24*3600) - 200*24*3600
	switch g.r.Intn(20) {
	case 0:
		sec = -g.r.Int63n(1 << 30)
	case 1:
		sec = 1<<33 + g.r.Int63n(1<<20) // beyond the 11 octal digits of USTAR
	}
	nsec := int64(0)
	if g.r.Intn(2) == 0 {
		nsec = g.r.Int63n(1e9)
	}
	return time.Unix(sec, nsec)
}

func (g *gen) setTimes(p string) error {
	t := g.randTime()
	ts := []unix.Timespec{unix.NsecToTimespec(t.UnixNano()), unix.NsecToTimespec(t.UnixNano())}
	return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
}

func (g *gen) randOwner() (int, int) {
	switch g.r.Intn(6) {
	case 0:
		return 1000 + g.r.Intn(5), 1000 + g.r.Intn(5)
	case 1:
		return 1<<21 + g.r.Intn(1000), 1<<22 + g.r.Intn(1000)
	default:
		return 0, 0
	}
}

func (g *gen) randMode(dir bool) os.FileMode {
	base := []os.FileMode{0o644, 0o755, 0o600, 0o444, 0o777, 0o700}
	m := base[g.r.Intn(len(base))]
	if dir {
		m |= 0o700 // keep it traversable for the generator
	}
	switch g.r.Intn(12) {
	case 0:
		m |= os.ModeSetuid
	case 1:
		m |= os.ModeSetgid
	case 2:
		m |= os.ModeSticky
	}
	return m
}

func (g *gen) content() []byte {
	var n int
	switch g.r.Intn(6) {
	case 0:
		n = 0
	case 1:
		n = 512 // exactly one block: no padding
	default:
		n = g.r.Intn(g.o.MaxFileSize + 1)
	}
	b := make([]byte, n)
	if g.r.Intn(2) == 0 {
		g.r.Read(b)
	} else {
		for i := range b {
			b[i] = "layerdiff\n"[i%10]
		}
	}
	return b
}

// finish sets mode, owner, times (and sometimes a capability) on a new or changed entry.
func (g *gen) finish(p string, dir bool) error {
	uid, gid := g.randOwner()
	if err := os.Lchown(p, uid, gid); err != nil {
		return err
	}
	fi, err := os.Lstat(p)
	if err != nil {
		return err
	}
	if fi.Mode()&os.ModeSymlink == 0 {
		if err := os.Chmod(p, g.randMode(dir)); err != nil {
			return err
		}
		if fi.Mode().IsRegular() && g.r.Intn(8) == 0 {
			// A file capability (v2: magic, permitted, inheritable); set after chown, which
			// clears it.
			cap := []byte{0, 0, 0, 2, byte(g.r.Intn(255) + 1), 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
			if err := unix.Lsetxattr(p, "security.capability", cap, 0); err != nil {
				return fmt.Errorf("setcap %s: %w", p, err)
			}
		}
	}
	return g.setTimes(p)
}

func (g *gen) addRandom() error {
	dir := filepath.Join(g.root, g.parent())
	p := filepath.Join(dir, g.name())
	switch k := g.r.Intn(20); {
	case k < 9:
		if err := os.WriteFile(p, g.content(), 0o644); err != nil {
			return err
		}
		return g.finish(p, false)
	case k < 13:
		if err := os.Mkdir(p, 0o755); err != nil {
			return err
		}
		return g.finish(p, true)
	case k < 15:
		targets := []string{"target", "../up", "/abs/path", "t\u00fcr", strings.Repeat("x/", 60), g.pick(g.entries(false))}
		target := targets[g.r.Intn(len(targets))]
		if target == "" {
			target = "nothing-yet"
		}
		if err := os.Symlink(target, p); err != nil {
			return err
		}
		return g.finish(p, false)
	case k < 18:
		src := g.pickRegular()
		if src == "" {
			return nil
		}
		return os.Link(filepath.Join(g.root, src), p)
	case k == 18:
		if err := unix.Mkfifo(p, 0o644); err != nil {
			return err
		}
		return g.finish(p, false)
	default:
		mode := uint32(unix.S_IFCHR)
		if g.r.Intn(2) == 0 {
			mode = unix.S_IFBLK
		}
		dev := unix.Mkdev(uint32(g.r.Intn(300)), uint32(g.r.Intn(1<<20)))
		if err := unix.Mknod(p, mode|0o600, int(dev)); err != nil {
			return err
		}
		return g.finish(p, false)
	}
}

func (g *gen) pickRegular() string {
	var regs []string
	for _, e := range g.entries(false) {
		if fi, err := os.Lstat(filepath.Join(g.root, e)); err == nil && fi.Mode().IsRegular() {
			regs = append(regs, e)
		}
	}
	return g.pick(regs)
}

func (g *gen) changeRandom() error {
	all := g.entries(false)
	target := g.pick(all)
	if target == "" {
		return g.addRandom()
	}
	p := filepath.Join(g.root, target)
	fi, err := os.Lstat(p)
	if err != nil {
		return err
	}
	switch k := g.r.Intn(16); {
	case k < 4:
		return g.addRandom()
	case k < 6:
		return os.RemoveAll(p)
	case k == 6: // rewrite contents, keeping size and mtime: only content comparison sees it
		if !fi.Mode().IsRegular() || fi.Size() == 0 {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		b[g.r.Intn(len(b))] ^= 0x5a
		if err := os.WriteFile(p, b, 0); err != nil {
			return err
		}
		ts := []unix.Timespec{unix.NsecToTimespec(fi.ModTime().UnixNano()), unix.NsecToTimespec(fi.ModTime().UnixNano())}
		return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
	case k == 7: // new contents
		if !fi.Mode().IsRegular() {
			return nil
		}
		if err := os.WriteFile(p, g.content(), 0); err != nil {
			return err
		}
		return g.setTimes(p)
	case k == 8:
		if fi.Mode()&os.ModeSymlink != 0 {
			return nil
		}
		return os.Chmod(p, g.randMode(fi.IsDir()))
	case k == 9:
		uid, gid := g.randOwner()
		return os.Lchown(p, uid, gid)
	case k == 10:
		return g.setTimes(p)
	case k == 11: // replace with another type
		if err := os.RemoveAll(p); err != nil {
			return err
		}
		if fi.IsDir() {
			if err := os.WriteFile(p, g.content(), 0o644); err != nil {
				return err
			}
			return g.finish(p, false)
		}
		if err := os.Mkdir(p, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(p, "inside"), []byte("x"), 0o644); err != nil {
			return err
		}
		return g.finish(p, true)
	case k == 12: // another name for an existing (maybe unmodified) file
		src := g.pickRegular()
		if src == "" {
			return nil
		}
		return os.Link(filepath.Join(g.root, src), filepath.Join(g.root, g.parent(), g.name()))
	case k == 13:
		if !fi.Mode().IsRegular() {
			return nil
		}
		cap := []byte{0, 0, 0, 2, byte(g.r.Intn(255) + 1), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
		return unix.Lsetxattr(p, "security.capability", cap, 0)
	case k == 14:
		return g.addSocket()
	default: // touch by nanoseconds only
		t := fi.ModTime().Add(time.Duration(1 + g.r.Intn(999)))
		ts := []unix.Timespec{unix.NsecToTimespec(t.UnixNano()), unix.NsecToTimespec(t.UnixNano())}
		return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
	}
}

func (g *gen) addSocket() error {
	p := filepath.Join(g.root, g.parent(), fmt.Sprintf("s%d", g.next()))
	if len(p) > 100 { // sun_path limit
		return nil
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Bind(fd, &unix.SockaddrUnix{Name: p})
}

// fixDirTimes gives every directory a seeded time, deepest first, so that the trees do not
// depend on when they were built.
func (g *gen) fixDirTimes(root string) error {
	saved := g.root
	g.root = root
	dirs := g.entries(true)
	g.root = saved
	sort.Sort(sort.Reverse(sort.StringSlice(dirs)))
	for _, d := range dirs {
		if err := g.setTimes(filepath.Join(root, d)); err != nil {
			return err
		}
	}
	return nil
}

// words is a fixed vocabulary of short random byte strings: text made of them gzips about
// 2-3x, like real rootfs files, so benchmarks and the demo compress realistic data.
var words = func() [][]byte {
	rng := randv2.New(randv2.NewPCG(1, 2))
	ws := make([][]byte, 512)
	for i := range ws {
		w := make([]byte, 3+rng.IntN(10))
		for j := range w {
			w[j] = byte(rng.IntN(256))
		}
		ws[i] = w
	}
	return ws
}()

// Compressible returns size bytes drawn from rng that compress like real rootfs files.
func Compressible(rng *randv2.Rand, size int) []byte {
	b := make([]byte, 0, size+16)
	for len(b) < size {
		b = append(b, words[rng.IntN(len(words))]...)
	}
	return b[:size]
}

// WriteRootfs writes a rootfs-like tree under dir for the benchmarks: files files of
// total bytes together, mostly small and a few large (the mean is total/files), spread
// over 20 top directories and 600 leaf directories, with contents from Compressible.
func WriteRootfs(rng *randv2.Rand, dir string, files, total int) error {
	var written int
	for i := 0; i < files; i++ {
		var size int
		switch r := rng.IntN(100); {
		case r < 80:
			size = rng.IntN(8 << 10)
		case r < 98:
			size = 8<<10 + rng.IntN(64<<10)
		default:
			size = rng.IntN(1 << 20)
		}
		if i == files-1 && written < total {
			size = total - written
		}
		written += size
		path := filepath.Join(dir, fmt.Sprintf("d%02d/p%03d/f%05d", i%20, i%600, i))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(path, Compressible(rng, size), 0o644); err != nil {
			return err
		}
	}
	return nil
}
