// Package treecmp compares two directory trees the way layer parity needs: type, content,
// mode bits, owner, every xattr, device numbers, symlink targets, hardlink groups and
// mtimes to the nanosecond (directories included); or one tree before and after something
// ran, with inode numbers, link counts and ctimes as well (Options.Identity), so that any
// write shows.
package treecmp

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Options tune a comparison.
type Options struct {
	// FreshSince: two mtimes both at or after this instant count as equal (both trees set
	// them to "now", e.g. parents created implicitly). Zero disables it.
	FreshSince time.Time
	// IgnoreRootTimes skips the mtime of the top directory itself.
	IgnoreRootTimes bool
	// IgnoreRootMode skips the mode of the top directory itself (a mount point's, never a
	// layer's).
	IgnoreRootMode bool
	// IgnoreDirTimes skips directory mtimes (a parent created implicitly ends with the time
	// its last child was made).
	IgnoreDirTimes bool
	// IgnoreWhiteoutTimes skips the mtimes of overlay whiteouts (0/0 character devices):
	// they are made when the layer is applied.
	IgnoreWhiteoutTimes bool
	// MtimeSeconds compares mtimes in whole seconds (layers carry no fractions).
	MtimeSeconds bool
	// Xattrs, when non-nil, limits the xattr comparison to these names.
	Xattrs []string
	// IgnoreSockets leaves sockets out (layers never carry them).
	IgnoreSockets bool
	// Identity also compares inode numbers, link counts and ctimes: for one tree watched
	// before and after, where a write that restored every value still shows.
	Identity bool
}

// Entry is what is compared for one path.
type Entry struct {
	Path    string
	Type    fs.FileMode
	Perm    uint32 // st_mode & 07777
	UID     uint32
	GID     uint32
	Rdev    uint64
	Size    int64
	Content string // sha256 of regular file data
	Link    string // symlink target
	Xattrs  map[string]string
	Mtime   time.Time
	Hardlnk string // first path (walk order) sharing this inode, "" if none
	// Identity (compared with Options.Identity only).
	Ino   uint64
	Nlink uint64
	Ctime time.Time
}

// Tree is a snapshot of a directory tree.
type Tree struct {
	// Name is what differences call this tree: its root path unless changed.
	Name    string
	Entries map[string]*Entry // by path relative to the root ("." is the root)
	Order   []string          // walk order
}

// Snapshot walks root with lstat, leaving out the paths in skip (relative to root) and
// everything below them.
func Snapshot(root string, skip ...string) (*Tree, error) {
	tree := &Tree{Name: root, Entries: map[string]*Entry{}}
	byInode := map[uint64]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		rel, _ := filepath.Rel(root, p)
		for _, s := range skip {
			if rel == s {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
		}
		e, err := Stat(p)
		if err != nil {
			if errors.Is(err, unix.ENOENT) {
				// overlayfs lists whiteouts in pure-upper directories but hides them on lookup.
				return nil
			}
			return err
		}
		e.Path = rel
		if e.Type != fs.ModeDir && e.Nlink > 1 {
			if first, ok := byInode[e.Ino]; ok {
				e.Hardlnk = first
			} else {
				byInode[e.Ino] = rel
			}
		}
		tree.Entries[rel] = e
		tree.Order = append(tree.Order, rel)
		return nil
	})
	return tree, err
}

// Stat records one path (with lstat), Path being p as given; Hardlnk needs a walk (Snapshot).
func Stat(p string) (*Entry, error) {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return nil, fmt.Errorf("lstat %s: %w", p, err)
	}
	e := &Entry{
		Path:  p,
		Perm:  st.Mode & 07777,
		UID:   st.Uid,
		GID:   st.Gid,
		Mtime: time.Unix(st.Mtim.Sec, st.Mtim.Nsec),
		Ino:   st.Ino,
		Nlink: uint64(st.Nlink),
		Ctime: time.Unix(st.Ctim.Sec, st.Ctim.Nsec),
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		e.Size = st.Size
		f, err := os.Open(p)
		if err != nil {
			return nil, err
		}
		h := sha256.New()
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			return nil, err
		}
		e.Content = fmt.Sprintf("%x", h.Sum(nil))
	case unix.S_IFLNK:
		e.Type = fs.ModeSymlink
		link, err := os.Readlink(p)
		if err != nil {
			return nil, err
		}
		e.Link = link
	case unix.S_IFDIR:
		e.Type = fs.ModeDir
	case unix.S_IFCHR:
		e.Type = fs.ModeDevice | fs.ModeCharDevice
		e.Rdev = st.Rdev
	case unix.S_IFBLK:
		e.Type = fs.ModeDevice
		e.Rdev = st.Rdev
	case unix.S_IFIFO:
		e.Type = fs.ModeNamedPipe
	case unix.S_IFSOCK:
		e.Type = fs.ModeSocket
	}
	x, err := xattrs(p)
	if err != nil {
		return nil, fmt.Errorf("xattrs of %s: %w", p, err)
	}
	e.Xattrs = x
	return e, nil
}

func xattrs(p string) (map[string]string, error) {
	sz, err := unix.Llistxattr(p, nil)
	if err != nil {
		if errors.Is(err, unix.ENOTSUP) {
			return nil, nil
		}
		return nil, err
	}
	buf := make([]byte, sz)
	sz, err = unix.Llistxattr(p, buf)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, k := range strings.Split(string(buf[:sz]), "\x00") {
		if k == "" {
			continue
		}
		vsz, err := unix.Lgetxattr(p, k, nil)
		if err != nil {
			return nil, err
		}
		v := make([]byte, vsz)
		vsz, err = unix.Lgetxattr(p, k, v)
		if err != nil {
			return nil, err
		}
		out[k] = string(v[:vsz])
	}
	return out, nil
}

// Compare returns every difference between trees a and b (empty when equal).
func Compare(a, b string, o Options) ([]string, error) {
	ta, err := Snapshot(a)
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", a, err)
	}
	tb, err := Snapshot(b)
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", b, err)
	}
	return Diff(ta, tb, o), nil
}

// Diff returns every difference between snapshots a and b (empty when equal), sorted.
func Diff(a, b *Tree, o Options) []string {
	orderA, orderB := a.Order, b.Order
	if o.IgnoreSockets {
		orderA, orderB = dropSockets(a.Entries, orderA), dropSockets(b.Entries, orderB)
	}
	var diffs []string
	for _, p := range orderA {
		x, y := a.Entries[p], b.Entries[p]
		if y == nil {
			diffs = append(diffs, fmt.Sprintf("%s: only in %s", p, a.Name))
			continue
		}
		diffs = append(diffs, compareEntry(x, y, o)...)
	}
	for _, p := range orderB {
		if x := a.Entries[p]; x == nil || (o.IgnoreSockets && x.Type&fs.ModeSocket != 0) {
			diffs = append(diffs, fmt.Sprintf("%s: only in %s", p, b.Name))
		}
	}
	sort.Strings(diffs)
	return diffs
}

func compareEntry(x, y *Entry, o Options) []string {
	var d []string
	add := func(what string, a, b any) {
		d = append(d, fmt.Sprintf("%s: %s differs: %v vs %v", x.Path, what, a, b))
	}
	if x.Type != y.Type {
		add("type", x.Type, y.Type)
		return d
	}
	root := x.Path == "."
	if x.Perm != y.Perm && !(o.IgnoreRootMode && root) {
		add("mode", fmt.Sprintf("%04o", x.Perm), fmt.Sprintf("%04o", y.Perm))
	}
	if x.UID != y.UID || x.GID != y.GID {
		add("owner", fmt.Sprintf("%d:%d", x.UID, x.GID), fmt.Sprintf("%d:%d", y.UID, y.GID))
	}
	if x.Rdev != y.Rdev {
		add("rdev", x.Rdev, y.Rdev)
	}
	if x.Size != y.Size || x.Content != y.Content {
		add("content", fmt.Sprintf("%d/%s", x.Size, x.Content), fmt.Sprintf("%d/%s", y.Size, y.Content))
	}
	if x.Link != y.Link {
		add("symlink target", x.Link, y.Link)
	}
	if x.Hardlnk != y.Hardlnk {
		add("hardlink group", x.Hardlnk, y.Hardlnk)
	}
	if !sameXattrs(pick(x.Xattrs, o.Xattrs), pick(y.Xattrs, o.Xattrs)) {
		add("xattrs", x.Xattrs, y.Xattrs)
	}
	fresh := !o.FreshSince.IsZero() && !x.Mtime.Before(o.FreshSince) && !y.Mtime.Before(o.FreshSince)
	mx, my := x.Mtime, y.Mtime
	if o.MtimeSeconds {
		mx, my = mx.Truncate(time.Second), my.Truncate(time.Second)
	}
	ignored := (o.IgnoreRootTimes && root) || (o.IgnoreDirTimes && x.Type == fs.ModeDir) ||
		(o.IgnoreWhiteoutTimes && x.Type&fs.ModeCharDevice != 0 && x.Rdev == 0 && y.Rdev == 0)
	if !mx.Equal(my) && !fresh && !ignored {
		add("mtime", x.Mtime.UnixNano(), y.Mtime.UnixNano())
	}
	if o.Identity {
		if x.Ino != y.Ino {
			add("inode", x.Ino, y.Ino)
		}
		if x.Nlink != y.Nlink {
			add("link count", x.Nlink, y.Nlink)
		}
		if !x.Ctime.Equal(y.Ctime) {
			add("ctime", x.Ctime.UnixNano(), y.Ctime.UnixNano())
		}
	}
	return d
}

func dropSockets(e map[string]*Entry, order []string) []string {
	var out []string
	for _, p := range order {
		if e[p].Type&fs.ModeSocket == 0 {
			out = append(out, p)
		}
	}
	return out
}

func pick(x map[string]string, names []string) map[string]string {
	if names == nil {
		return x
	}
	out := map[string]string{}
	for _, n := range names {
		if v, ok := x[n]; ok {
			out[n] = v
		}
	}
	return out
}

func sameXattrs(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || !bytes.Equal([]byte(v), []byte(w)) {
			return false
		}
	}
	return true
}
