// Package treecmp compares two directory trees the way layer parity needs: type, content,
// mode bits, owner, every xattr, device numbers, symlink targets, hardlink groups and
// mtimes to the nanosecond (directories included).
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
	// MtimeSeconds compares mtimes in whole seconds (layers carry no fractions).
	MtimeSeconds bool
	// Xattrs, when non-nil, limits the xattr comparison to these names.
	Xattrs []string
	// IgnoreSockets leaves sockets out (layers never carry them).
	IgnoreSockets bool
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
	inode   uint64
	Hardlnk string // first path (walk order) sharing this inode, "" if none
}

// Snapshot walks root with lstat.
func Snapshot(root string) (map[string]*Entry, []string, error) {
	out := map[string]*Entry{}
	var order []string
	byInode := map[uint64]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		rel, _ := filepath.Rel(root, p)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			if errors.Is(err, unix.ENOENT) {
				// overlayfs lists whiteouts in pure-upper directories but hides them on lookup.
				return nil
			}
			return fmt.Errorf("lstat %s: %w", p, err)
		}
		e := &Entry{
			Path:  rel,
			Type:  d.Type(),
			Perm:  st.Mode & 07777,
			UID:   st.Uid,
			GID:   st.Gid,
			Mtime: time.Unix(st.Mtim.Sec, st.Mtim.Nsec),
			inode: st.Ino,
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			e.Size = st.Size
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			h := sha256.New()
			_, err = io.Copy(h, f)
			f.Close()
			if err != nil {
				return err
			}
			e.Content = fmt.Sprintf("%x", h.Sum(nil))
		case unix.S_IFLNK:
			if e.Link, err = os.Readlink(p); err != nil {
				return err
			}
		case unix.S_IFCHR, unix.S_IFBLK:
			e.Rdev = st.Rdev
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR && st.Nlink > 1 {
			if first, ok := byInode[st.Ino]; ok {
				e.Hardlnk = first
			} else {
				byInode[st.Ino] = rel
			}
		}
		x, err := xattrs(p)
		if err != nil {
			return fmt.Errorf("xattrs of %s: %w", p, err)
		}
		e.Xattrs = x
		out[rel] = e
		order = append(order, rel)
		return nil
	})
	return out, order, err
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
	ea, orderA, err := Snapshot(a)
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", a, err)
	}
	eb, orderB, err := Snapshot(b)
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", b, err)
	}
	var diffs []string
	if o.IgnoreSockets {
		orderA, orderB = dropSockets(ea, orderA), dropSockets(eb, orderB)
	}
	for _, p := range orderA {
		x, y := ea[p], eb[p]
		if y == nil {
			diffs = append(diffs, fmt.Sprintf("%s: only in %s", p, a))
			continue
		}
		diffs = append(diffs, compareEntry(x, y, o)...)
	}
	for _, p := range orderB {
		if x := ea[p]; x == nil || (o.IgnoreSockets && x.Type&fs.ModeSocket != 0) {
			diffs = append(diffs, fmt.Sprintf("%s: only in %s", p, b))
		}
	}
	sort.Strings(diffs)
	return diffs, nil
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
	if x.Perm != y.Perm {
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
	if !mx.Equal(my) && !fresh && !(o.IgnoreRootTimes && x.Path == ".") {
		add("mtime", x.Mtime.UnixNano(), y.Mtime.UnixNano())
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
