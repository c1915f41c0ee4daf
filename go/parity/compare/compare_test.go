package compare

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/archive"
	"github.com/containerd/continuity/fs"
	"github.com/containerd/continuity/fs/fstest"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"

	"github.com/layerdiff/layerdiff/go/internal/randtree"
	"github.com/layerdiff/layerdiff/go/internal/testkit"
)

// needsRoot is what compare parity needs root for (testkit.RequireRoot).
const needsRoot = "chown, mknod, security.capability"

func containerdDiff(t *testing.T, lower, upper string, sde *time.Time) []byte {
	t.Helper()
	var buf bytes.Buffer
	var opts []archive.WriteDiffOpt
	if sde != nil {
		opts = append(opts, archive.WithSourceDateEpoch(sde))
	}
	if err := archive.WriteDiff(context.Background(), &buf, lower, upper, opts...); err != nil {
		t.Fatalf("containerd WriteDiff: %v", err)
	}
	return buf.Bytes()
}

type descriptor struct {
	MediaType        string `json:"mediaType"`
	Digest           string `json:"digest"`
	Size             int64  `json:"size"`
	DiffID           string `json:"diffID"`
	UncompressedSize int64  `json:"uncompressedSize"`
}

// ourDiff runs `layerdiff diff` and returns the written layer and the printed descriptor.
func ourDiff(t *testing.T, lower, upper string, sde *time.Time, compression string) ([]byte, descriptor) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "layer")
	args := []string{"diff", "--compression", compression}
	if sde != nil {
		args = append(args, "--source-date-epoch", strconv.FormatInt(sde.Unix(), 10))
	}
	args = append(args, lower, upper, "-o", out)
	cmd := exec.Command(testkit.LayerdiffBin(t), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("layerdiff %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	var d descriptor
	if err := json.Unmarshal(stdout, &d); err != nil {
		t.Fatalf("layerdiff printed %q: %v", stdout, err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b, d
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

type entry struct {
	offset int64
	hdr    tar.Header
}

func headers(b []byte) ([]entry, error) {
	cr := &testkit.CountingReader{R: bytes.NewReader(b)}
	tr := tar.NewReader(cr)
	var out []entry
	for {
		off := cr.N
		h, err := tr.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, entry{off, *h})
	}
}

// describeDifference names the first differing header (or byte) of two tar streams.
func describeDifference(want, got []byte) string {
	off := 0
	for off < len(want) && off < len(got) && want[off] == got[off] {
		off++
	}
	msg := fmt.Sprintf("first differing byte at offset %d (block %d, byte %d in block); sizes containerd=%d layerdiff=%d",
		off, off/512, off%512, len(want), len(got))
	hw, errW := headers(want)
	hg, errG := headers(got)
	for i := 0; i < len(hw) || i < len(hg); i++ {
		var a, b *tar.Header
		if i < len(hw) {
			a = &hw[i].hdr
		}
		if i < len(hg) {
			b = &hg[i].hdr
		}
		if a == nil || b == nil || fmt.Sprintf("%+v", *a) != fmt.Sprintf("%+v", *b) {
			return fmt.Sprintf("%s\nfirst differing header #%d:\n containerd: %+v\n layerdiff:  %+v", msg, i, a, b)
		}
	}
	blk := off / 512 * 512
	end := func(b []byte) []byte {
		if blk+512 <= len(b) {
			return b[blk : blk+512]
		}
		if blk < len(b) {
			return b[blk:]
		}
		return nil
	}
	return fmt.Sprintf("%s (read errors: %v / %v)\ncontainerd block: %q\nlayerdiff block:  %q", msg, errW, errG, end(want), end(got))
}

// assertParity diffs lower and upper with containerd and with layerdiff and requires equal
// bytes and a descriptor that describes them.
func assertParity(t *testing.T, lower, upper string, sde *time.Time) []byte {
	t.Helper()
	want := containerdDiff(t, lower, upper, sde)
	got, d := ourDiff(t, lower, upper, sde, "none")
	if !bytes.Equal(want, got) {
		t.Fatalf("layer differs from containerd's:\n%s", describeDifference(want, got))
	}
	if d.DiffID != sha(want) || d.Digest != d.DiffID || d.Size != int64(len(want)) ||
		d.UncompressedSize != int64(len(want)) || d.MediaType != "application/vnd.oci.image.layer.v1.tar" {
		t.Fatalf("descriptor %+v does not describe the %d-byte layer %s", d, len(want), sha(want))
	}
	return want
}

// build makes lower from a, and upper as a copy of lower changed by b (as containerd's tests).
func build(t *testing.T, a, b fstest.Applier) (string, string) {
	t.Helper()
	lower, upper := t.TempDir(), t.TempDir()
	if err := a.Apply(lower); err != nil {
		t.Fatalf("apply lower: %v", err)
	}
	if err := fs.CopyDir(upper, lower); err != nil {
		t.Fatalf("copy lower: %v", err)
	}
	if err := b.Apply(upper); err != nil {
		t.Fatalf("apply upper: %v", err)
	}
	return lower, upper
}

type pairCase struct {
	name string
	a, b fstest.Applier
}

func runCases(t *testing.T, cases []pairCase, sde *time.Time) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			lower, upper := build(t, c.a, c.b)
			assertParity(t, lower, upper, sde)
		})
	}
}

// TestContainerdDiffTar: every case of containerd's TestDiffTar (pkg/archive/tar_test.go).
func TestContainerdDiffTar(t *testing.T) {
	testkit.RequireRoot(t, needsRoot)
	runCases(t, []pairCase{
		{"EmptyDiff", fstest.Apply(fstest.CreateDir("/etc/", 0o755)), fstest.Apply()},
		{"ParentInclusion",
			fstest.Apply(fstest.CreateDir("/d1/", 0o755), fstest.CreateDir("/d2/", 0o770)),
			fstest.Apply(fstest.CreateDir("/d1/d", 0o700), fstest.CreateFile("/d2/f", []byte("ok"), 0o644))},
		{"HardlinkParentInclusion",
			fstest.Apply(
				fstest.CreateDir("/d1/", 0o755), fstest.CreateFile("/d1/f1", []byte("link me"), 0o644),
				fstest.CreateDir("/d2/", 0o755), fstest.CreateFile("/d2/f1", []byte("link me"), 0o644),
				fstest.CreateDir("/d3/", 0o755),
				fstest.CreateDir("/d4/", 0o755), fstest.CreateFile("/d4/f1", []byte("link me"), 0o644),
				fstest.CreateDir("/d5/", 0o755), fstest.CreateFile("/d5/f1", []byte("link me"), 0o644),
				fstest.CreateDir("/d6/", 0o755),
				fstest.Link("/d1/f1", "/d6/l1"), fstest.Link("/d5/f1", "/d6/l2")),
			fstest.Apply(
				fstest.Link("/d1/f1", "/d2/l1"), fstest.Link("/d4/f1", "/d3/l1"),
				fstest.Remove("/d6/l1"), fstest.Remove("/d6/l2"))},
		{"UpdateDirectoryPermission",
			fstest.Apply(fstest.CreateDir("/d1/", 0o755), fstest.CreateDir("/d2/", 0o770)),
			fstest.Apply(fstest.Chmod("/d1", 0o777), fstest.CreateDir("/d1/d", 0o700),
				fstest.CreateFile("/d2/f", []byte("ok"), 0o644))},
		{"HardlinkUpdatedParent",
			fstest.Apply(
				fstest.CreateDir("/d1/", 0o755), fstest.CreateFile("/d1/f1", []byte("link me"), 0o644),
				fstest.CreateDir("/d2/", 0o755), fstest.CreateFile("/d2/f1", []byte("link me"), 0o644),
				fstest.CreateDir("/d3/", 0o755), fstest.CreateFile("/d3/f1", []byte("link me"), 0o644),
				fstest.CreateDir("/d4/", 0o755)),
			fstest.Apply(
				fstest.Chmod("/d1", 0o777), fstest.Link("/d1/f1", "/d2/l1"),
				fstest.Chmod("/d4", 0o777), fstest.Link("/d3/f1", "/d4/l1"))},
		{"WhiteoutIncludesParents",
			fstest.Apply(
				fstest.CreateDir("/d1/", 0o755), fstest.CreateFile("/d1/f1", []byte("content"), 0o644),
				fstest.CreateDir("/d2/", 0o755), fstest.CreateFile("/d2/f1", []byte("content"), 0o644),
				fstest.CreateFile("/d2/f2", []byte("content"), 0o644),
				fstest.CreateDir("/d3/", 0o755), fstest.CreateFile("/d3/f1", []byte("content"), 0o644),
				fstest.CreateDir("/d4/", 0o755), fstest.CreateFile("/d4/f1", []byte("content"), 0o644),
				fstest.CreateDir("/d5/", 0o755), fstest.CreateFile("/d5/f1", []byte("content"), 0o644)),
			fstest.Apply(
				fstest.Remove("/d1/f1"), fstest.Remove("/d2/f1"), fstest.Chmod("/d2/f2", 0o777),
				fstest.Remove("/d3/f1"), fstest.CreateFile("/d3/f2", []byte("content"), 0o644),
				fstest.Remove("/d4/f1"), fstest.CreateFile("/d4/f0", []byte("content"), 0o644),
				fstest.RemoveAll("/d5"))},
		{"WhiteoutParentRemoval",
			fstest.Apply(fstest.CreateDir("/d1/", 0o755), fstest.CreateDir("/d2/", 0o755),
				fstest.CreateFile("/d2/f1", []byte("content"), 0o644)),
			fstest.Apply(fstest.RemoveAll("/d1"), fstest.RemoveAll("/d2"), fstest.CreateDir("/d3/", 0o755))},
		{"IgnoreSockets",
			fstest.Apply(fstest.CreateFile("/f1", []byte("content"), 0o644)),
			fstest.Apply(fstest.CreateFile("/f2", []byte("content"), 0o644),
				fstest.CreateSocket("/s0", 0o644), fstest.CreateFile("/f3", []byte("content"), 0o644))},
	}, nil)
}

// TestContainerdSourceDateEpoch: containerd's TestSourceDateEpoch, plus the same trees without
// an epoch and an epoch that equals a file's mtime.
func TestContainerdSourceDateEpoch(t *testing.T) {
	testkit.RequireRoot(t, needsRoot)
	sde := time.Date(2022, 1, 23, 12, 34, 56, 0, time.UTC)
	past := time.Date(2022, 1, 1, 0, 0, 0, 0, time.UTC)
	veryRecent := time.Now()
	a := fstest.Apply(fstest.CreateFile("/f1", []byte("content"), 0o644))
	b := fstest.Apply(
		fstest.RemoveAll("/f1"),
		fstest.CreateFile("/f2", []byte("content2"), 0o644), fstest.Chtimes("/f2", past, past),
		fstest.CreateFile("/f3", []byte("content3"), 0o644), fstest.Chtimes("/f3", veryRecent, veryRecent),
		fstest.CreateDir("/d", 0o755),
		fstest.CreateFile("/d/at-epoch", []byte("x"), 0o644), fstest.Chtimes("/d/at-epoch", sde, sde),
		fstest.CreateFile("/d/just-after", []byte("x"), 0o644),
		fstest.Chtimes("/d/just-after", sde.Add(time.Nanosecond), sde.Add(time.Nanosecond)),
		fstest.Chtimes("/d", veryRecent, veryRecent),
	)
	lower, upper := build(t, a, b)
	t.Run("WithEpoch", func(t *testing.T) { assertParity(t, lower, upper, &sde) })
	t.Run("WithoutEpoch", func(t *testing.T) { assertParity(t, lower, upper, nil) })
	t.Run("EpochZero", func(t *testing.T) {
		zero := time.Unix(0, 0)
		assertParity(t, lower, upper, &zero)
	})
}

// TestContinuityChangeSequences: the change sequences of continuity's fs/diff_test.go.
func TestContinuityChangeSequences(t *testing.T) {
	testkit.RequireRoot(t, needsRoot)
	tt := time.Now().Truncate(time.Second)
	t1 := tt.Add(5 * time.Nanosecond)
	t2 := tt.Add(6 * time.Nanosecond)
	runCases(t, []pairCase{
		{"Simple",
			fstest.Apply(
				fstest.CreateDir("/etc", 0o755),
				fstest.CreateFile("/etc/hosts", []byte("mydomain 10.0.0.1"), 0o644),
				fstest.CreateFile("/etc/profile", []byte("PATH=/usr/bin"), 0o644),
				fstest.CreateFile("/etc/unchanged", []byte("PATH=/usr/bin"), 0o644),
				fstest.CreateFile("/etc/unexpected", []byte("#!/bin/sh"), 0o644)),
			fstest.Apply(
				fstest.CreateFile("/etc/hosts", []byte("mydomain 10.0.0.120"), 0o644),
				fstest.CreateFile("/etc/profile", []byte("PATH=/usr/bin"), 0o666),
				fstest.CreateDir("/root", 0o700),
				fstest.CreateFile("/root/.bashrc", []byte("PATH=/usr/sbin:/usr/bin"), 0o644),
				fstest.Remove("/etc/unexpected"))},
		{"EmptyFile",
			fstest.Apply(fstest.CreateDir("/etc", 0o755), fstest.CreateFile("/etc/empty", []byte(""), 0o644),
				fstest.Chtimes("/etc/empty", tt, tt)),
			fstest.Apply()},
		{"NestedDeletion",
			fstest.Apply(fstest.CreateDir("/d0", 0o755), fstest.CreateDir("/d1", 0o755),
				fstest.CreateDir("/d1/d2", 0o755), fstest.CreateFile("/d1/d2/f1", []byte("mydomain 10.0.0.1"), 0o644)),
			fstest.Apply(fstest.RemoveAll("/d0"), fstest.RemoveAll("/d1"))},
		{"DirectoryReplace",
			fstest.Apply(fstest.CreateDir("/dir1", 0o755), fstest.CreateFile("/dir1/f1", []byte("#####"), 0o644),
				fstest.CreateDir("/dir1/f2", 0o755), fstest.CreateFile("/dir1/f2/f3", []byte("#!/bin/sh"), 0o644)),
			fstest.Apply(fstest.CreateFile("/dir1/f11", []byte("#New file here"), 0o644),
				fstest.RemoveAll("/dir1/f2"), fstest.CreateFile("/dir1/f2", []byte("Now file"), 0o666))},
		{"RemoveDirectoryTree",
			fstest.Apply(fstest.CreateDir("/dir1/dir2/dir3", 0o755), fstest.CreateFile("/dir1/f1", []byte("f1"), 0o644),
				fstest.CreateFile("/dir1/dir2/f2", []byte("f2"), 0o644)),
			fstest.Apply(fstest.RemoveAll("/dir1"))},
		{"RemoveDirectoryTreeWithDash",
			fstest.Apply(fstest.CreateDir("/dir1/dir2/dir3", 0o755), fstest.CreateFile("/dir1/f1", []byte("f1"), 0o644),
				fstest.CreateFile("/dir1/dir2/f2", []byte("f2"), 0o644), fstest.CreateDir("/dir1-before", 0o755),
				fstest.CreateFile("/dir1-before/f2", []byte("f2"), 0o644)),
			fstest.Apply(fstest.RemoveAll("/dir1"))},
		{"FileReplace",
			fstest.Apply(fstest.CreateFile("/dir1", []byte("a file, not a directory"), 0o644)),
			fstest.Apply(fstest.Remove("/dir1"), fstest.CreateDir("/dir1/dir2", 0o755),
				fstest.CreateFile("/dir1/dir2/f1", []byte("also a file"), 0o644))},
		{"ParentDirectoryPermission",
			fstest.Apply(fstest.CreateDir("/dir1", 0o700), fstest.CreateDir("/dir2", 0o751), fstest.CreateDir("/dir3", 0o777)),
			fstest.Apply(fstest.CreateDir("/dir1/d", 0o700), fstest.CreateFile("/dir1/d/f", []byte("irrelevant"), 0o644),
				fstest.CreateFile("/dir1/f", []byte("irrelevant"), 0o644), fstest.CreateFile("/dir2/f", []byte("irrelevant"), 0o644),
				fstest.CreateFile("/dir3/f", []byte("irrelevant"), 0o644))},
		{"UpdateWithSameTime",
			fstest.Apply(
				fstest.CreateFile("/file-modified-time", []byte("1"), 0o644), fstest.Chtimes("/file-modified-time", t1, t1),
				fstest.CreateFile("/file-no-change", []byte("1"), 0o644), fstest.Chtimes("/file-no-change", t1, t1),
				fstest.CreateFile("/file-same-time", []byte("1"), 0o644), fstest.Chtimes("/file-same-time", t1, t1),
				fstest.CreateFile("/file-truncated-time-1", []byte("1"), 0o644), fstest.Chtimes("/file-truncated-time-1", tt, tt),
				fstest.CreateFile("/file-truncated-time-2", []byte("1"), 0o644), fstest.Chtimes("/file-truncated-time-2", tt, tt),
				fstest.CreateFile("/file-truncated-time-3", []byte("1"), 0o644), fstest.Chtimes("/file-truncated-time-3", t1, t1)),
			fstest.Apply(
				fstest.CreateFile("/file-modified-time", []byte("2"), 0o644), fstest.Chtimes("/file-modified-time", t2, t2),
				fstest.CreateFile("/file-no-change", []byte("1"), 0o644), fstest.Chtimes("/file-no-change", t1, t1),
				fstest.CreateFile("/file-same-time", []byte("2"), 0o644), fstest.Chtimes("/file-same-time", t1, t1),
				fstest.CreateFile("/file-truncated-time-1", []byte("1"), 0o644), fstest.Chtimes("/file-truncated-time-1", t1, t1),
				fstest.CreateFile("/file-truncated-time-2", []byte("2"), 0o644), fstest.Chtimes("/file-truncated-time-2", tt, tt),
				fstest.CreateFile("/file-truncated-time-3", []byte("1"), 0o644), fstest.Chtimes("/file-truncated-time-3", tt, tt))},
	}, nil)
}

// nameAt builds a path of exactly total bytes whose first component is dirLen bytes (no
// directory when dirLen is 0).
func nameAt(total, dirLen int, fill byte) string {
	if dirLen == 0 {
		return strings.Repeat(string(fill), total)
	}
	return strings.Repeat("d", dirLen) + "/" + strings.Repeat(string(fill), total-dirLen-1)
}

// TestNameLengths: names of 99/100/101/155/156/257 bytes, as files, directories, symlink and
// hardlink targets, with and without a '/' that permits a USTAR prefix split.
func TestNameLengths(t *testing.T) {
	testkit.RequireRoot(t, needsRoot)
	var lowerOps, upperOps []fstest.Applier
	madeDirs := map[string]bool{}
	n := 0
	for _, total := range []int{99, 100, 101, 155, 156, 157, 200, 254, 255, 256, 257} {
		for _, dirLen := range []int{0, 1, 50, total - 102, total - 101, total - 100, total - 99, 154, 155, 156} {
			if dirLen < 0 || dirLen > 255 || (dirLen > 0 && (total-dirLen-1 < 1 || total-dirLen-1 > 255)) || (dirLen == 0 && total > 255) {
				continue
			}
			n++
			fill := byte('a' + n%26)
			p := "/" + nameAt(total, dirLen, fill)
			if dirLen > 0 {
				d := "/" + strings.Repeat("d", dirLen)
				if !madeDirs[d] {
					madeDirs[d] = true
					lowerOps = append(lowerOps, fstest.CreateDir(d, 0o755))
				}
			}
			switch n % 4 {
			case 0:
				upperOps = append(upperOps, fstest.CreateFile(p, []byte("long"), 0o644))
			case 1:
				upperOps = append(upperOps, fstest.CreateDir(p, 0o750))
			case 2:
				upperOps = append(upperOps, fstest.Symlink(strings.Repeat("t", total%200+1), p))
			case 3:
				lowerOps = append(lowerOps, fstest.CreateFile(p, []byte("gone"), 0o644))
				upperOps = append(upperOps, fstest.Remove(p)) // whiteout name is 4 bytes longer
			}
		}
	}
	// Link targets around the 100-byte linkname field.
	for _, l := range []int{99, 100, 101, 200} {
		upperOps = append(upperOps, fstest.Symlink(strings.Repeat("s", l), fmt.Sprintf("/sym%d", l)))
		src := "/" + nameAt(l, 0, 'h')
		upperOps = append(upperOps, fstest.CreateFile(src, []byte("hard"), 0o644),
			fstest.Link(src, fmt.Sprintf("/hard%d", l)))
	}
	lower, upper := build(t, fstest.Apply(lowerOps...), fstest.Apply(upperOps...))
	assertParity(t, lower, upper, nil)
}

// TestNonASCII: non-ASCII (valid and invalid UTF-8) names, directories and link targets,
// short and long.
func TestNonASCII(t *testing.T) {
	testkit.RequireRoot(t, needsRoot)
	long := strings.Repeat("\u00e9", 60) // 120 bytes
	lower, upper := build(t,
		fstest.Apply(fstest.CreateDir("/d\u00e9j\u00e0", 0o755), fstest.CreateFile("/d\u00e9j\u00e0/old\u00fc", []byte("x"), 0o644)),
		fstest.Apply(
			fstest.CreateFile("/caf\u00e9", []byte("coffee"), 0o644),
			fstest.CreateFile("/bad\xff\xfename", []byte("bytes"), 0o644),
			fstest.CreateDir("/\u65e5\u672c", 0o755),
			fstest.CreateFile("/\u65e5\u672c/\u8a9e", []byte("jp"), 0o600),
			fstest.CreateFile("/"+long, []byte("long"), 0o644),
			fstest.CreateDir("/"+long+"dir", 0o755),
			fstest.Symlink("t\u00fcr", "/link-to-tuer"),
			fstest.Symlink("\xff", "/link-to-invalid"),
			fstest.Symlink(long, "/link-long-nonascii"),
			fstest.CreateFile("/src\u00e9", []byte("hl"), 0o644),
			fstest.Link("/src\u00e9", "/z-link-to-nonascii"),
			fstest.Remove("/d\u00e9j\u00e0/old\u00fc"),
		))
	assertParity(t, lower, upper, nil)
}

type applierFunc func(root string) error

func (f applierFunc) Apply(root string) error { return f(root) }

func removeXAttr(name, key string) fstest.Applier {
	return applierFunc(func(root string) error { return unix.Lremovexattr(filepath.Join(root, name), key) })
}

func setCap(name string, cap []byte) fstest.Applier {
	return fstest.SetXAttr(name, "security.capability", string(cap))
}

// TestCapabilities: the security.capability PAX record on short and long names, capability
// changes as modifications, and carried over to deferred hardlinks.
func TestCapabilities(t *testing.T) {
	testkit.RequireRoot(t, needsRoot)
	capA := []byte{0, 0, 0, 2, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	capB := []byte{0, 0, 0, 2, 0x00, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	longName := "/capdir/" + strings.Repeat("c", 130)
	lower, upper := build(t,
		fstest.Apply(
			fstest.CreateFile("/same-bytes", []byte("x"), 0o755), setCap("/same-bytes", capA),
			fstest.CreateFile("/changed-cap", []byte("x"), 0o755), setCap("/changed-cap", capA),
			fstest.CreateFile("/dropped-cap", []byte("x"), 0o755), setCap("/dropped-cap", capA),
			fstest.CreateDir("/a", 0o755), fstest.CreateFile("/a/unmodified-link", []byte("ping"), 0o755),
			setCap("/a/unmodified-link", capB),
			fstest.CreateDir("/capdir", 0o755)),
		fstest.Apply(
			fstest.CreateFile("/ping", []byte("ping"), 0o755), setCap("/ping", capA),
			fstest.CreateFile(longName, []byte("long"), 0o755), setCap(longName, capB),
			setCap("/changed-cap", capB),
			removeXAttr("/dropped-cap", "security.capability"),
			fstest.Link("/a/unmodified-link", "/z-new-link"),
		))
	assertParity(t, lower, upper, nil)
}

// TestOwnersTimesAndSpecialFiles: uid/gid >= 2^21, mtimes before 1970 and past 8^11 seconds,
// devices (also changed device numbers) and fifos, sockets (deleted sockets get whiteouts).
func TestOwnersTimesAndSpecialFiles(t *testing.T) {
	testkit.RequireRoot(t, needsRoot)
	lower, upper := t.TempDir(), t.TempDir()
	mk := func(root string) {
		for _, p := range []string{"/old-sock", "/kept-sock"} {
			if err := fstest.CreateSocket(p, 0o755).Apply(root); err != nil {
				t.Fatal(err)
			}
		}
		must(t, unix.Mknod(filepath.Join(root, "chr-changes"), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))))
		must(t, os.WriteFile(filepath.Join(root, "owned"), []byte("o"), 0o644))
	}
	mk(lower)
	mk(upper)
	must(t, os.Chmod(filepath.Join(upper, "kept-sock"), 0o700)) // modified socket: skipped
	must(t, os.Remove(filepath.Join(upper, "old-sock")))
	must(t, os.Remove(filepath.Join(upper, "chr-changes")))
	must(t, unix.Mknod(filepath.Join(upper, "chr-changes"), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 5))))
	must(t, unix.Mknod(filepath.Join(upper, "blk"), unix.S_IFBLK|0o640, int(unix.Mkdev(259, 1<<20-1))))
	must(t, unix.Mknod(filepath.Join(upper, "chr"), unix.S_IFCHR|0o666, int(unix.Mkdev(4095, 7))))
	must(t, unix.Mkfifo(filepath.Join(upper, "fifo"), 0o620))
	must(t, os.Lchown(filepath.Join(upper, "owned"), 1<<21, 1<<21-1))
	must(t, os.WriteFile(filepath.Join(upper, "bigids"), []byte("b"), 0o644))
	must(t, os.Lchown(filepath.Join(upper, "bigids"), 1<<31, 4_000_000_000))
	for name, ts := range map[string]time.Time{
		"old":        time.Unix(-86400*365, 0),
		"old-nanos":  time.Unix(-5, 500),
		"future":     time.Unix(1<<33, 0),
		"far-future": time.Unix(1<<36, 123),
		"last-octal": time.Unix(1<<33-1, 999_999_999),
	} {
		p := filepath.Join(upper, name)
		must(t, os.WriteFile(p, []byte(name), 0o644))
		must(t, os.Chtimes(p, ts, ts))
	}
	must(t, os.Symlink("target", filepath.Join(upper, "symlink-owned")))
	must(t, os.Lchown(filepath.Join(upper, "symlink-owned"), 3<<20, 3))
	for _, m := range []os.FileMode{os.ModeSetuid | 0o755, os.ModeSetgid | 0o750, os.ModeSticky | 0o1777} {
		p := filepath.Join(upper, "mode-"+strconv.FormatUint(uint64(m), 8))
		must(t, os.WriteFile(p, nil, 0o644))
		must(t, os.Chmod(p, m))
	}
	assertParity(t, lower, upper, nil)
	epoch := time.Unix(1<<33+10, 0)
	assertParity(t, lower, upper, &epoch)
}

// TestHardlinkGroups: hardlink groups across directories, unmodified names before and after
// the first changed name, modified groups, and links whose source is deleted.
func TestHardlinkGroups(t *testing.T) {
	testkit.RequireRoot(t, needsRoot)
	lower, upper := build(t,
		fstest.Apply(
			fstest.CreateDir("/a", 0o755), fstest.CreateDir("/b", 0o755), fstest.CreateDir("/c", 0o755),
			fstest.CreateDir("/c/deep", 0o700),
			fstest.CreateFile("/a/one", []byte("group one"), 0o644),
			fstest.Link("/a/one", "/b/one"),
			fstest.Link("/a/one", "/c/deep/one"),
			fstest.CreateFile("/a/two", []byte("group two"), 0o600),
			fstest.CreateFile("/b/three", []byte("group three"), 0o644),
			fstest.Link("/b/three", "/c/three"),
			fstest.CreateFile("/a/gone", []byte("deleted source"), 0o644),
			fstest.Link("/a/gone", "/c/stays")),
		fstest.Apply(
			// group one: an unmodified group gaining a new name at the end.
			fstest.Link("/a/one", "/z-one"),
			// group two: unmodified single file gains names before and after it.
			fstest.Link("/a/two", "/0-two"),
			fstest.Link("/a/two", "/c/deep/two"),
			// group three: modified in place (both names change).
			fstest.CreateFile("/b/three", []byte("group three, changed"), 0o644),
			fstest.Remove("/a/gone"),
			fstest.Chmod("/c/stays", 0o600),
		))
	assertParity(t, lower, upper, nil)
}

// TestRandomTreePairs: 50 seeded random tree pairs, and 10 more with a source-date-epoch.
// It also checks that the seeds together hit every kind of entry, so that a generator change
// cannot quietly make the test trivial.
func TestRandomTreePairs(t *testing.T) {
	testkit.RequireRoot(t, needsRoot)
	sde := time.Date(2022, 1, 23, 12, 34, 56, 0, time.UTC)
	seen := map[string]int{}
	for seed := int64(1); seed <= 60; seed++ {
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			lower, upper := filepath.Join(t.TempDir(), "lower"), filepath.Join(t.TempDir(), "upper")
			if err := randtree.Generate(seed, lower, upper); err != nil {
				t.Fatal(err)
			}
			var epoch *time.Time
			if seed > 50 {
				epoch = &sde
			}
			layer := assertParity(t, lower, upper, epoch)
			hs, err := headers(layer)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range hs {
				seen["type "+string(e.hdr.Typeflag)]++
				if strings.Contains(e.hdr.Name, ".wh.") {
					seen["whiteout"]++
				}
				for k := range e.hdr.PAXRecords {
					seen["pax "+k]++
				}
			}
		})
	}
	for _, want := range []string{"type 0", "type 1", "type 2", "type 3", "type 4", "type 5", "type 6",
		"whiteout", "pax path", "pax linkpath", "pax uid", "pax gid", "pax mtime",
		"pax SCHILY.xattr.security.capability"} {
		if seen[want] == 0 {
			t.Errorf("no random tree pair produced %q (seen: %v)", want, seen)
		}
	}
	t.Logf("entries seen across seeds: %v", seen)
}

// TestCompressedOutputs: gzip (several levels) and zstd outputs decode, with Go's gzip and
// klauspost's zstd as containerd uses, to containerd's tar; descriptors match.
func TestCompressedOutputs(t *testing.T) {
	testkit.RequireRoot(t, needsRoot)
	lower, upper := filepath.Join(t.TempDir(), "lower"), filepath.Join(t.TempDir(), "upper")
	if err := randtree.GenerateWith(7, lower, upper, randtree.Options{Entries: 200, MaxFileSize: 600 << 10, Changes: 120}); err != nil {
		t.Fatal(err)
	}
	want := assertParity(t, lower, upper, nil)
	for _, c := range []struct {
		compression, mediaType string
		decode                 func(io.Reader) (io.Reader, error)
	}{
		{"gzip", "application/vnd.oci.image.layer.v1.tar+gzip", func(r io.Reader) (io.Reader, error) {
			zr, err := gzip.NewReader(r)
			if err == nil {
				zr.Multistream(false) // must be one member
			}
			return zr, err
		}},
		{"zstd", "application/vnd.oci.image.layer.v1.tar+zstd", func(r io.Reader) (io.Reader, error) {
			return zstd.NewReader(r)
		}},
	} {
		t.Run(c.compression, func(t *testing.T) {
			got, d := ourDiff(t, lower, upper, nil, c.compression)
			r, err := c.decode(bytes.NewReader(got))
			if err != nil {
				t.Fatal(err)
			}
			plain, err := io.ReadAll(r)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if !bytes.Equal(plain, want) {
				t.Fatalf("decoded layer differs:\n%s", describeDifference(want, plain))
			}
			if d.MediaType != c.mediaType || d.Digest != sha(got) || d.Size != int64(len(got)) ||
				d.DiffID != sha(want) || d.UncompressedSize != int64(len(want)) {
				t.Fatalf("descriptor %+v does not describe the output", d)
			}
			if c.compression == "gzip" {
				gz, err := exec.LookPath("gzip")
				if err != nil {
					t.Fatalf("GNU gzip is needed to check that it decodes our layers: %v", err)
				}
				cmd := exec.Command(gz, "-dc")
				cmd.Stdin = bytes.NewReader(got)
				plain, err := cmd.Output()
				if err != nil || !bytes.Equal(plain, want) {
					t.Fatalf("GNU gzip does not decode the layer to containerd's tar: %v", err)
				}
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
