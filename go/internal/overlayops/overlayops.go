// Package overlayops is a port of the seeded generator of tests/overlay_kernel.rs (the
// kernel-oracle property test of the upperdir compare): the PRNG of tests/common/rng.rs, its
// build_lower and its random_op, with the same sequence of draws and the same system calls,
// so that seed N of a mount configuration builds the same lower tree and runs the same
// operations through the merged view in Go as in Rust. The Go Differ test
// (go/upperdir_seeds_test.go) runs those seeds on containerd's overlay snapshotter mounts.
//
// Both generators write a canonical trace (one line per lower entry, per operation and per
// drawn parameter; see [Gen.Trace] and [TraceSHA256]), and both tests assert the SHA-256 of
// the trace of the first seeds against testdata/traces.txt: that keeps the port faithful.
// Filesystem outcomes feed later draws (the path lists), so a trace also pins what the kernel
// did; the two sides must therefore run with the same overlay semantics.
//
// Where Rust's std would differ from Go's os package, the raw system call is used: rename(2)
// (os.Rename refuses to replace a directory), unlink(2) and rmdir(2) (os.Remove tries both),
// chmod(2) with raw mode bits, lsetxattr/lgetxattr (the xattr crate's set/get), linkat(2)
// with no flags (std::fs::hard_link).
package overlayops

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// Rng is tests/common/rng.rs: splitmix64 of the seed, then xorshift64*.
type Rng struct{ s uint64 }

// NewRng is Rng::new.
func NewRng(seed uint64) *Rng {
	z := seed + 0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return &Rng{(z ^ (z >> 31)) | 1}
}

// Next is Rng::next.
func (r *Rng) Next() uint64 {
	x := r.s
	x ^= x >> 12
	x ^= x << 25
	x ^= x >> 27
	r.s = x
	return x * 0x2545f4914f6cdd1d
}

// Below is Rng::below: a number in 0..n (n > 0).
func (r *Rng) Below(n uint64) uint64 { return r.Next() % n }

// Chance is Rng::chance: true with probability pct%.
func (r *Rng) Chance(pct uint64) bool { return r.Below(100) < pct }

// Bytes is Rng::bytes: n bytes, one draw each (the low byte).
func (r *Rng) Bytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Next())
	}
	return b
}

// pick is Rng::pick.
func pick[T any](r *Rng, items []T) T { return items[r.Below(uint64(len(items)))] }

// ConfigSeed is the Rust test's per-configuration seed: seed ^ (name.len() << 32), so that
// "plain" seed N here is the Rust "plain" configuration's seed N.
func ConfigSeed(config string, seed uint64) uint64 { return seed ^ uint64(len(config))<<32 }

// Gen is one seed's generator state: the PRNG and the trace written so far.
type Gen struct {
	Rng   *Rng
	trace []string
}

// New is the generator of a configuration's seed, as the Rust test makes it.
func New(config string, seed uint64) *Gen { return &Gen{Rng: NewRng(ConfigSeed(config, seed))} }

func (g *Gen) tracef(format string, args ...any) {
	g.trace = append(g.trace, fmt.Sprintf(format, args...))
}

// Trace is the trace so far, one line per element.
func (g *Gen) Trace() []string { return g.trace }

// TraceSHA256 is the hex SHA-256 of the trace, lines joined by and ended with "\n" (what
// testdata/traces.txt holds).
func TraceSHA256(lines []string) string {
	h := sha256.New()
	for _, l := range lines {
		h.Write([]byte(l))
		h.Write([]byte{'\n'})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// fnv64 is FNV-1a 64 of drawn data, so the trace pins the bytes, not only their count.
func fnv64(b []byte) uint64 {
	h := uint64(0xcbf29ce484222325)
	for _, c := range b {
		h ^= uint64(c)
		h *= 0x100000001b3
	}
	return h
}

func (g *Gen) traceData(b []byte) { g.tracef("D %d %016x", len(b), fnv64(b)) }

func rel(root, p string) string {
	r, err := filepath.Rel(root, p)
	if err != nil {
		return p
	}
	return r
}

// names is random_name's list.
var names = []string{"a", "b", "c", "d", "e", "a b", "a.b", "z", "\u00e9t\u00e9", "f-1"}

func (g *Gen) randomName() string { return pick(g.Rng, names) }

// capability is the Rust capability(): a v2 security.capability value.
func (g *Gen) capability() []byte {
	v := make([]byte, 20)
	v[3] = 0x02 // 0x0200_0000 little-endian
	bit := uint32(1) << uint32(g.Rng.Below(30))
	v[4], v[5], v[6], v[7] = byte(bit), byte(bit>>8), byte(bit>>16), byte(bit>>24)
	return v
}

// setMtime is set_mtime: atime and mtime, not following a symlink, errors ignored.
func setMtime(p string, sec, nsec int64) {
	t := unix.Timespec{Sec: sec, Nsec: nsec}
	_ = unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{t, t}, unix.AT_SYMLINK_NOFOLLOW)
}

// pathLess is Rust's Path ordering: component by component, each compared as bytes (so
// "a/x" sorts before "a b", unlike a byte-wise string sort).
func pathLess(a, b string) int {
	return slices.Compare(strings.Split(a, "/"), strings.Split(b, "/"))
}

// allPaths is all_paths: every path under root (root excluded), descending into entries
// whose directory entry type is a directory, sorted as Rust sorts PathBufs.
func allPaths(root string) []string {
	var out []string
	todo := []string{root}
	for len(todo) > 0 {
		d := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		entries, err := os.ReadDir(d)
		if err != nil {
			continue
		}
		for _, e := range entries {
			p := filepath.Join(d, e.Name())
			if e.IsDir() {
				todo = append(todo, p)
			}
			out = append(out, p)
		}
	}
	slices.SortFunc(out, pathLess)
	return out
}

func lstatIsDir(p string) bool {
	fi, err := os.Lstat(p)
	return err == nil && fi.IsDir()
}

// isFile and isDir are Path::is_file and Path::is_dir: they follow symlinks.
func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// dirsOf is dirs_of: the real directories of all_paths, then root.
func dirsOf(root string) []string {
	var d []string
	for _, p := range allPaths(root) {
		if lstatIsDir(p) {
			d = append(d, p)
		}
	}
	return append(d, root)
}

// writeFile is std::fs::write: O_WRONLY|O_CREAT|O_TRUNC, mode 0666 (less the umask).
func writeFile(p string, data []byte) error { return os.WriteFile(p, data, 0o666) }

// BuildLower is build_lower: a random lower tree in root.
func (g *Gen) BuildLower(root string) error {
	return g.BuildLowerIn(func(_, _ uint64) (string, error) { return root, nil })
}

// BuildLowerIn is BuildLower with the tree's root asked of at before each of the n entries
// (0 <= i < n), so that a caller can build the tree across snapshot layers: a root must show
// the tree built so far.
func (g *Gen) BuildLowerIn(at func(i, n uint64) (string, error)) error {
	n := 8 + g.Rng.Below(20)
	g.tracef("lower %d", n)
	for i := uint64(0); i < n; i++ {
		root, err := at(i, n)
		if err != nil {
			return err
		}
		dirs := dirsOf(root)
		parent := pick(g.Rng, dirs)
		p := filepath.Join(parent, g.randomName())
		if _, err := os.Lstat(p); err == nil {
			g.tracef("L skip %s", rel(root, p))
			continue
		}
		switch k := g.Rng.Below(10); {
		case k <= 2:
			g.tracef("L dir %s", rel(root, p))
			_ = os.Mkdir(p, 0o777)
		case k <= 6:
			g.tracef("L file %s", rel(root, p))
			data := g.Rng.Bytes(int(g.Rng.Below(3000)))
			g.traceData(data)
			if err := writeFile(p, data); err != nil {
				return err
			}
			if g.Rng.Chance(30) {
				c := g.capability()
				g.tracef("X %x", c)
				if err := unix.Lsetxattr(p, "security.capability", c, 0); err != nil {
					return fmt.Errorf("set security.capability on %s: %w", p, err)
				}
			}
			if g.Rng.Chance(40) {
				sec := 1_600_000_000 + int64(g.Rng.Below(1000))
				g.tracef("N %d", sec)
				setMtime(p, sec, 0)
			}
		case k == 7:
			var files []string
			for _, f := range allPaths(root) {
				if isFile(f) {
					files = append(files, f)
				}
			}
			if len(files) == 0 {
				g.tracef("L link %s -", rel(root, p))
			} else {
				target := pick(g.Rng, files)
				g.tracef("L link %s %s", rel(root, p), rel(root, target))
				_ = unix.Linkat(unix.AT_FDCWD, target, unix.AT_FDCWD, p, 0)
			}
		case k == 8:
			target := g.randomName()
			g.tracef("L symlink %s %s", rel(root, p), target)
			_ = os.Symlink(target, p)
		default:
			g.tracef("L fifo %s", rel(root, p))
			_ = unix.Mkfifo(p, 0o644)
		}
	}
	return nil
}

// OpCount draws the number of operations, as the Rust test does after mounting.
func (g *Gen) OpCount() uint64 {
	n := 5 + g.Rng.Below(20)
	g.tracef("ops %d", n)
	return n
}

// SourceDateEpoch draws whether the compare sets SOURCE_DATE_EPOCH (1_650_000_000), as the
// Rust test does after the operations.
func (g *Gen) SourceDateEpoch() bool {
	sde := g.Rng.Chance(50)
	g.tracef("sde %t", sde)
	return sde
}

// withExtension is Path::with_extension("new") for random_name's names (none starts with
// a dot).
func withExtension(p string) string {
	dir, name := filepath.Split(p)
	if i := strings.LastIndexByte(name, '.'); i > 0 {
		name = name[:i]
	}
	return dir + name + ".new"
}

func isFifo(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode()&os.ModeNamedPipe != 0
}

// RandomOp is random_op: one random operation through the merged view m; failures of the
// operation itself are the kernel's answer and ignored, as in Rust.
func (g *Gen) RandomOp(m string) {
	paths := allPaths(m)
	dirs := dirsOf(m)
	r := g.Rng
	anyPath := func() string {
		if len(paths) == 0 {
			return filepath.Join(m, "a")
		}
		return pick(r, paths)
	}
	// A name that may exist, never a FIFO (which would block a write).
	fresh := func() string {
		p := filepath.Join(pick(r, dirs), g.randomName())
		if isFifo(p) {
			return withExtension(p)
		}
		return p
	}
	k := r.Below(20)
	switch k {
	case 0:
		p := fresh()
		g.tracef("O 0 %s", rel(m, p))
		data := r.Bytes(int(r.Below(2000)))
		g.traceData(data)
		// fresh's ".new" name can be a FIFO too (seed plain:878): opening it would block.
		if !isFifo(p) {
			_ = writeFile(p, data)
		}
	case 1:
		p := anyPath()
		g.tracef("O 1 %s", rel(m, p))
		if isFile(p) {
			data := r.Bytes(int(r.Below(2000)))
			g.traceData(data)
			_ = writeFile(p, data)
		}
	case 2:
		p := anyPath()
		g.tracef("O 2 %s", rel(m, p))
		if isFile(p) {
			if f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0); err == nil {
				data := r.Bytes(10)
				g.traceData(data)
				_, _ = f.Write(data)
				f.Close()
			}
		}
	case 3:
		p := anyPath()
		g.tracef("O 3 %s", rel(m, p))
		if isFile(p) {
			if f, err := os.OpenFile(p, os.O_WRONLY, 0); err == nil {
				n := r.Below(100)
				g.tracef("N %d", n)
				_ = f.Truncate(int64(n))
				f.Close()
			}
		}
	case 4:
		p := anyPath()
		g.tracef("O 4 %s", rel(m, p))
		var st unix.Stat_t
		if unix.Lstat(p, &st) == nil && st.Mode&unix.S_IFMT != unix.S_IFLNK {
			old := st.Mode & 0o7777
			_ = unix.Chmod(p, 0o640)
			back := r.Chance(50)
			g.tracef("C %t", back)
			if back {
				// chmod back: copied up, unchanged.
				_ = unix.Chmod(p, old)
			}
		}
	case 5:
		p := anyPath()
		uid := int(r.Below(3)) + 1000
		g.tracef("O 5 %s %d", rel(m, p), uid)
		_ = unix.Lchown(p, uid, -1)
	case 6:
		// touch; sometimes back to a whole second (then contents decide).
		p := anyPath()
		g.tracef("O 6 %s", rel(m, p))
		var st unix.Stat_t
		if unix.Lstat(p, &st) == nil {
			same := r.Chance(50)
			g.tracef("C %t", same)
			if same {
				setMtime(p, st.Mtim.Sec, st.Mtim.Nsec)
			} else {
				sec := 1_700_000_000 + int64(r.Below(10))
				g.tracef("N %d", sec)
				setMtime(p, sec, 0)
			}
		}
	case 7:
		p := anyPath()
		g.tracef("O 7 %s", rel(m, p))
		if !isDir(p) {
			_ = unix.Unlink(p)
		}
	case 8:
		p := anyPath()
		g.tracef("O 8 %s", rel(m, p))
		_ = unix.Rmdir(p)
	case 9:
		p := anyPath()
		g.tracef("O 9 %s", rel(m, p))
		if isDir(p) && lstatIsDir(p) {
			_ = os.RemoveAll(p)
			again := r.Chance(50)
			g.tracef("C %t", again)
			if again {
				// mkdir over a deleted directory: opaque.
				_ = os.Mkdir(p, 0o777)
				name := g.randomName()
				g.tracef("N %s", name)
				_ = writeFile(filepath.Join(p, name), []byte("again"))
			}
		}
	case 10:
		p := fresh()
		g.tracef("O 10 %s", rel(m, p))
		_ = os.Mkdir(p, 0o777)
	case 11, 12:
		from := anyPath()
		to := fresh()
		g.tracef("O %d %s %s", k, rel(m, from), rel(m, to))
		_ = unix.Rename(from, to)
	case 13:
		p := anyPath()
		g.tracef("O 13 %s", rel(m, p))
		if isFile(p) {
			to := fresh()
			g.tracef("P %s", rel(m, to))
			_ = unix.Linkat(unix.AT_FDCWD, p, unix.AT_FDCWD, to, 0)
		}
	case 14:
		target := g.randomName()
		p := fresh()
		g.tracef("O 14 %s %s", target, rel(m, p))
		_ = os.Symlink(target, p)
	case 15:
		major := 1 + uint32(r.Below(5))
		minor := uint32(r.Below(5))
		p := fresh()
		g.tracef("O 15 %d %d %s", major, minor, rel(m, p))
		_ = unix.Mknod(p, unix.S_IFCHR|0o600, int(unix.Mkdev(major, minor)))
	case 16:
		p := fresh()
		g.tracef("O 16 %s", rel(m, p))
		_ = unix.Mkfifo(p, 0o600)
	case 17:
		p := anyPath()
		g.tracef("O 17 %s", rel(m, p))
		if isFile(p) {
			c := g.capability()
			g.tracef("X %x", c)
			_ = unix.Lsetxattr(p, "security.capability", c, 0)
		}
	case 18:
		// The same value written back: contents, capability.
		p := anyPath()
		g.tracef("O 18 %s", rel(m, p))
		if isFile(p) {
			if data, err := os.ReadFile(p); err == nil {
				_ = writeFile(p, data)
			}
			if c, ok := lgetxattr(p, "security.capability"); ok {
				_ = unix.Lsetxattr(p, "security.capability", c, 0)
			}
		}
	default:
		// Open for writing and close: copy-up without a change.
		p := anyPath()
		g.tracef("O 19 %s", rel(m, p))
		if isFile(p) {
			if f, err := os.OpenFile(p, os.O_WRONLY, 0); err == nil {
				f.Close()
			}
		}
	}
}

// lgetxattr is xattr::get's Ok(Some(value)).
func lgetxattr(p, name string) ([]byte, bool) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Lgetxattr(p, name, buf)
		if err == unix.ERANGE {
			buf = make([]byte, 2*len(buf))
			continue
		}
		if err != nil {
			return nil, false
		}
		return buf[:n], true
	}
}
