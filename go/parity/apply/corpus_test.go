package apply

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/archive"
	"golang.org/x/sys/unix"

	"github.com/layerdiff/layerdiff/go/internal/testkit"
)

func gz(t *testing.T, b []byte) []byte { return testkit.Gzip(t, b) }

func zst(t *testing.T, b []byte) []byte { return testkit.Zstd(t, b) }

// baseTree is a small existing tree most crafted layers are applied onto.
var baseTree = tree(
	mkdir("etc", 0o755),
	mkfile("etc/passwd", "root:x:0:0", 0o644),
	mkfile("etc/shadow", "secret", 0o600),
	mkdir("etc/sub", 0o700),
	mkfile("etc/sub/deep", "deep", 0o644),
	mkdir("usr/lib", 0o755),
	mkfile("usr/lib/libc.so", "elf", 0o755),
	mksymlink("usr/lib", "lib"),
	mksymlink("/etc", "abs-etc"),
	mksymlink("../../../etc", "up-etc"),
	mksymlink("/nonexistent/dir", "dangling"),
	mksymlink("loop2", "loop1"),
	mksymlink("loop1", "loop2"),
	mkfile("hl1", "shared", 0o640),
	mkhardlink("hl1", "hl2"),
	setxattr("etc/passwd", "user.origin", "base"),
)

var lowerTree = tree(
	mkdir("opt/app", 0o750),
	mkdir("opt/app/cfg", 0o711),
	setxattr("opt/app", "user.lower", "yes"),
	setxattr("opt/app", "trusted.secret", "no"),
	mkfile("opt/app/cfg/x", "x", 0o600),
	mkfile("etcfile", "f", 0o644),
	func(t *testing.T, root string) {
		os.Chown(filepath.Join(root, "opt/app"), 123, 456)
		os.Chown(filepath.Join(root, "opt/app/cfg"), 7, 8)
	},
)

func craftedCases(t *testing.T) []parityCase {
	var cs []parityCase
	add := func(name string, layer []byte) {
		cs = append(cs, parityCase{name: name, layer: layer, setup: baseTree, lower: lowerTree})
	}
	now := time.Unix(1650000000, 987654321)

	add("empty", nil)
	add("two-zero-blocks", make([]byte, 1024))
	add("one-zero-block", make([]byte, 512))
	add("basic", newTar(t).dir("a/").file("a/f", "hello").symlink("f", "a/l").link("a/f", "a/h").
		add(&tar.Header{Typeflag: tar.TypeChar, Name: "a/c", Devmajor: 1, Devminor: 3, Mode: 0o666}, nil).
		add(&tar.Header{Typeflag: tar.TypeBlock, Name: "a/b", Devmajor: 7, Devminor: 0, Mode: 0o660}, nil).
		add(&tar.Header{Typeflag: tar.TypeFifo, Name: "a/p", Mode: 0o600}, nil).bytes())
	add("owners-modes-times", newTar(t).
		add(&tar.Header{Typeflag: tar.TypeDir, Name: "o/", Mode: 0o1777, Uid: 1000, Gid: 1000, ModTime: now}, nil).
		add(&tar.Header{Typeflag: tar.TypeReg, Name: "o/suid", Mode: 0o4755, Uid: 12, Gid: 34, ModTime: now, AccessTime: now.Add(time.Hour), Format: tar.FormatPAX}, []byte("x")).
		add(&tar.Header{Typeflag: tar.TypeReg, Name: "o/old", Mode: 0o2644, ModTime: time.Unix(-100, 0), Format: tar.FormatPAX}, []byte("y")).
		add(&tar.Header{Typeflag: tar.TypeSymlink, Name: "o/sl", Linkname: "suid", Uid: 5, Gid: 6, ModTime: now}, nil).bytes())
	add("xattrs", newTar(t).
		add(&tar.Header{Typeflag: tar.TypeReg, Name: "x/f", PAXRecords: map[string]string{
			"SCHILY.xattr.user.a": "1", "SCHILY.xattr.user.empty": "", "SCHILY.xattr.security.capability": "\x01\x00\x00\x02\x00\x30\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
			"SCHILY.xattr.trusted.skip": "t"}}, []byte("data")).
		add(&tar.Header{Typeflag: tar.TypeDir, Name: "x/d/", PAXRecords: map[string]string{"SCHILY.xattr.user.dir": "v"}}, nil).
		add(&tar.Header{Typeflag: tar.TypeSymlink, Name: "x/s", Linkname: "f", PAXRecords: map[string]string{"SCHILY.xattr.user.onlink": "eperm-skipped"}}, nil).
		add(&tar.Header{Typeflag: tar.TypeFifo, Name: "x/p", PAXRecords: map[string]string{"SCHILY.xattr.user.onfifo": "eperm-skipped"}}, nil).bytes())
	add("pax-long-names-and-links", newTar(t).
		file(strings.Repeat("d", 120)+"/"+strings.Repeat("f", 150), "long").
		symlink(strings.Repeat("t", 200), "short/link").
		add(&tar.Header{Typeflag: tar.TypeReg, Name: "utf8-é", Format: tar.FormatPAX}, []byte("u")).bytes())
	add("gnu-long-names-base256", newTar(t).
		add(&tar.Header{Typeflag: tar.TypeReg, Name: strings.Repeat("g", 150) + "/f", Uid: 1 << 22, Gid: 1 << 23, Format: tar.FormatGNU}, []byte("gnu")).
		add(&tar.Header{Typeflag: tar.TypeSymlink, Name: "gl", Linkname: strings.Repeat("../", 50) + "etc", Format: tar.FormatGNU}, nil).
		add(&tar.Header{Typeflag: tar.TypeReg, Name: "neg", ModTime: time.Unix(-1<<40, 0), Format: tar.FormatGNU}, []byte("n")).bytes())
	add("pax-dotdot-path", newTar(t).
		add(&tar.Header{Typeflag: tar.TypeReg, Name: "plain", PAXRecords: map[string]string{"path": "../../../escape"}}, []byte("e")).
		add(&tar.Header{Typeflag: tar.TypeSymlink, Name: "../../" + strings.Repeat("p", 120) + "/pl", Linkname: "../../../../etc/passwd/" + strings.Repeat("q", 100), Format: tar.FormatPAX}, nil).
		add(&tar.Header{Typeflag: tar.TypeLink, Name: "ph", Linkname: "../../../" + strings.Repeat("r/../", 30) + "etc/passwd", Format: tar.FormatPAX}, nil).
		add(&tar.Header{Typeflag: tar.TypeReg, Name: "../../" + strings.Repeat("s/", 60) + "../../gnu", Format: tar.FormatGNU}, []byte("g")).bytes())
	add("global-header", newTar(t).
		add(&tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "etc/shadow", PAXRecords: map[string]string{"comment": "hi"}}, nil).
		add(&tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "newdir/glob", PAXRecords: map[string]string{"comment": "x"}}, nil).
		file("after", "ok").bytes())
	add("whiteouts", newTar(t).file("etc/.wh.passwd", "").file(".wh.usr", "").file(".wh.nothing", "").file("lib/.wh.libc.so", "").bytes())
	add("whiteout-through-symlinks", newTar(t).file("abs-etc/.wh.shadow", "").file("up-etc/sub/.wh.deep", "").bytes())
	add("whiteout-symlink-itself", newTar(t).file(".wh.abs-etc", "").file(".wh.dangling", "").bytes())
	add("opaque", newTar(t).dir("etc/").file("etc/new", "n").dir("etc/sub/").file("etc/.wh..wh..opq", "").bytes())
	add("opaque-out-of-order", newTar(t).file("etc/sub/keep", "k").file("etc/.wh..wh..opq", "").file("etc/late", "l").file("etc/.wh..wh..opq", "").bytes())
	add("opaque-through-symlink", newTar(t).file("abs-etc/.wh..wh..opq", "").bytes())
	add("opaque-new-dir", newTar(t).file("fresh/sub/.wh..wh..opq", "").bytes())
	add("opaque-lower-dir", newTar(t).file("opt/app/.wh..wh..opq", "").file("opt/app/cfg/y", "y").bytes())
	add("invalid-whiteout", newTar(t).file("etc/.wh..", "").bytes())
	add("invalid-whiteout-dotdot", newTar(t).file(".wh...", "").bytes())
	add("invalid-whiteout-empty", newTar(t).file("etc/.wh.", "").bytes())
	add("replace-file-with-dir", newTar(t).dir("etc/passwd/").file("etc/passwd/inner", "i").bytes())
	add("replace-dir-with-file", newTar(t).file("etc/sub", "was a dir").bytes())
	add("replace-symlink-with-file", newTar(t).file("abs-etc", "not a link").bytes())
	add("write-over-outside-symlink", newTar(t).symlink("/etc/hostname", "hostlink").file("hostlink", "mine").bytes())
	add("hardlink-breaks", newTar(t).file("hl1", "new content").bytes())
	add("hardlink-outside-targets", newTar(t).link("../../../../etc/passwd", "h1").link("/abs-etc/shadow", "h2").link("up-etc/passwd", "h3").link("lib/libc.so", "h4").bytes())
	add("hardlink-to-symlink", newTar(t).link("abs-etc", "hs").bytes())
	add("hardlink-missing", newTar(t).link("nope", "hm").bytes())
	add("hardlink-to-dir", newTar(t).link("etc", "hd").bytes())
	add("hardlink-dot", newTar(t).link("etc/passwd/.", "hdot").bytes())
	add("symlink-loop-parent", newTar(t).file("loop1/f", "x").bytes())
	add("dangling-parent", newTar(t).file("dangling/f", "made").bytes())
	add("parent-is-file", newTar(t).file("etc/passwd/x", "x").bytes())
	add("mkparent-from-lower", newTar(t).file("opt/app/cfg/new/z", "z").file("etcfile/child", "c").bytes())
	add("names-dot-dotdot-abs", newTar(t).file("./rel", "1").file("/abs", "2").file("../../up", "3").dir("./").dir("..").dir("/").
		add(&tar.Header{Typeflag: tar.TypeDir, Name: "a/../b/./c/", Mode: 0o700}, nil).bytes())
	add("dir-times-reset", newTar(t).add(&tar.Header{Typeflag: tar.TypeDir, Name: "t/", ModTime: now}, nil).file("t/a", "a").file("t/b", "b").bytes())
	add("dir-later-whited-out", newTar(t).dir("gone/").file(".wh.gone", "").bytes())
	add("dir-replaced-by-symlink", newTar(t).dir("dd/").symlink("/etc", "dd").bytes())
	add("device-out-of-range", newTar(t).add(&tar.Header{Typeflag: tar.TypeChar, Name: "bigdev", Devmajor: 1 << 33, Format: tar.FormatGNU}, nil).bytes())
	cs[len(cs)-1].fixedSince17 = true // 1.7 truncates the number to 32 bits
	add("device-large-major", newTar(t).add(&tar.Header{Typeflag: tar.TypeBlock, Name: "bigmaj", Devmajor: 5000, Devminor: 1 << 21}, nil).bytes())
	add("whiteout-of-existing-overlay", newTar(t).file(".wh.etc", "").dir("etc/").bytes())
	add("unknown-type", newTar(t).add(&tar.Header{Typeflag: 'Z', Name: "weird"}, nil).bytes())
	add("whiteout-with-data", newTar(t).file("etc/.wh.shadow", "ignored data").file("next", "n").bytes())
	add("uid-minus-one", newTar(t).add(&tar.Header{Typeflag: tar.TypeReg, Name: "m1", Uid: -1, Gid: -1, Format: tar.FormatGNU}, []byte("m")).bytes())

	add("symlink-created-then-parent-removed", newTar(t).dir("a").symlink("a", "b").file("b/x", "1").file("a/y", "2").
		file("a", "now a file").file("b/z", "3").bytes())
	add("lexical-dotdot-after-symlink", newTar(t).dir("q/r").symlink("q/r", "s").symlink("s/../c", "l").file("l/f", "lex").bytes())
	add("dir-merge-twice", newTar(t).add(&tar.Header{Typeflag: tar.TypeDir, Name: "m/", Mode: 0o700, Uid: 3}, nil).file("m/f", "f").
		add(&tar.Header{Typeflag: tar.TypeDir, Name: "m", Mode: 0o751, Uid: 4, ModTime: now}, nil).bytes())
	add("hardlink-then-source-replaced", newTar(t).file("src", "one").link("src", "dst").file("src", "two").link("dst", "dst2").bytes())
	add("opaque-descends-into-unpacked", newTar(t).dir("etc/sub/").file("etc/sub/new", "n").file("etc/.wh..wh..opq", "").bytes())
	add("opaque-twice-same-dir", newTar(t).file("etc/.wh..wh..opq", "").file("etc/later", "x").file("etc/.wh..wh..opq", "").bytes())
	chain := newTar(t).dir("target")
	for i := 0; i < 100; i++ {
		chain.symlink(fmt.Sprintf("c%d", i+1), fmt.Sprintf("c%d", i))
	}
	add("symlink-chain-100", chain.symlink("target", "c100").file("c0/f", "deep").bytes())
	long := newTar(t).dir("target")
	for i := 0; i < 300; i++ {
		long.symlink(fmt.Sprintf("k%d", i+1), fmt.Sprintf("k%d", i))
	}
	add("symlink-chain-300", long.symlink("target", "k300").file("k0/f", "deep").bytes())
	add("odd-names", newTar(t).file("a//b/./c", "1").file("./x/../y", "2").dir("d/.").file("d/./e", "3").bytes())
	add("symlink-to-self-parent", newTar(t).symlink(".", "self").file("self/self/self/f", "s").symlink("..", "up").file("up/up/g", "u").bytes())
	add("whiteout-then-recreate", newTar(t).file(".wh.etc", "").dir("etc/").file("etc/passwd", "new").bytes())
	add("dir-replaced-by-file-then-child", newTar(t).file("usr", "file").file("usr/lib/x", "x").bytes())
	add("hardlink-chain-through-symlink-dir", newTar(t).file("lib/newlib", "nl").link("usr/lib/newlib", "hl-through").bytes())
	add("overlay-lower-symlink-parent", newTar(t).file("opt/app/cfg/new/deeper/f", "z").bytes())
	add("pax-uid-large", newTar(t).add(&tar.Header{Typeflag: tar.TypeReg, Name: "bigid", Uid: 1 << 30, Gid: 1<<32 + 5, Format: tar.FormatPAX}, []byte("b")).bytes())
	add("pax-times-fractions", newTar(t).add(&tar.Header{Typeflag: tar.TypeReg, Name: "frac", ModTime: time.Unix(1500000000, 1), AccessTime: time.Unix(1400000000, 999999999), Format: tar.FormatPAX}, []byte("f")).
		add(&tar.Header{Typeflag: tar.TypeDir, Name: "fracdir", ModTime: time.Unix(1500000000, 5), AccessTime: time.Unix(1600000000, 7), Format: tar.FormatPAX}, nil).bytes())

	// Raw byte edits Go's writer will not make.
	trailing := append(newTar(t).file("t", "t").bytes(), []byte("trailing garbage after the archive")...)
	add("trailing-bytes", trailing)
	add("trailing-bytes-gzip", gz(t, trailing))
	add("trailing-bytes-zstd", zst(t, trailing))
	add("gzip", gz(t, newTar(t).file("z/f", "gzip").bytes()))
	add("gzip-multimember", append(gz(t, newTar(t).file("m1", "one").bytes()[:1024]), gz(t, newTar(t).file("m2", "two").bytes()[1024-1024:])...))
	add("zstd", zst(t, newTar(t).file("z/f", "zstd").bytes()))
	add("zstd-skippable-first", append([]byte{0x5e, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 'a', 'b', 'c'}, zst(t, newTar(t).file("z/s", "skip").bytes())...))
	add("gzip-then-zeros", append(gz(t, newTar(t).file("z/g", "g").bytes()), make([]byte, 64)...))
	add("gzip-trailing-garbage", append(gz(t, newTar(t).file("g", "g").bytes()), "junk"...))
	add("gzip-truncated", gz(t, newTar(t).file("g", strings.Repeat("x", 100000)).bytes())[:200])
	add("zstd-truncated", zst(t, newTar(t).file("g", strings.Repeat("y", 100000)).bytes())[:40])
	noEnd := newTar(t).file("f", "abc").bytes()
	add("no-end-blocks", noEnd[:1024])
	add("truncated-padding", noEnd[:512+100])
	add("truncated-data", noEnd[:512+2])
	add("truncated-header", noEnd[:300])
	bad := newTar(t).file("f", "abc").bytes()
	bad[148] = '7'
	add("bad-checksum", bad)
	zeroThen := append(make([]byte, 512), newTar(t).file("f", "abc").bytes()...)
	add("zero-block-then-header", zeroThen)
	rega := newTar(t).dir("olddir/").file("oldfile", "o").bytes()
	for _, off := range []int{0, 512} {
		blk := rega[off : off+512]
		blk[156] = 0
		fixChecksum(blk)
	}
	add("type-rega", rega)
	huge := paxBlock(t, "x", "2147483648")
	add("pax-2gib", huge)
	add("pax-bad-record", paxRaw(t, []byte("9 k=v\n")))
	return cs
}

// paxBlock is an 'x' header claiming `size` bytes, then nothing.
func paxBlock(t *testing.T, typ, size string) []byte {
	var b bytes.Buffer
	h := make([]byte, 512)
	copy(h, "PaxHeaders/f")
	copy(h[100:], "0000644\x00")
	copy(h[108:], "0000000\x00")
	copy(h[116:], "0000000\x00")
	var sz int64
	fmt.Sscan(size, &sz)
	copy(h[124:], fmt.Sprintf("%011o\x00", sz))
	copy(h[136:], "00000000000\x00")
	h[156] = typ[0]
	copy(h[257:], "ustar\x0000")
	fixChecksum(h)
	b.Write(h)
	b.Write(make([]byte, 4096))
	return b.Bytes()
}

func paxRaw(t *testing.T, rec []byte) []byte {
	h := paxBlock(t, "x", fmt.Sprint(len(rec)))[:512]
	data := make([]byte, 512)
	copy(data, rec)
	out := append(append([]byte{}, h...), data...)
	return append(out, newTar(t).file("after", "a").bytes()...)
}

func fixChecksum(blk []byte) {
	copy(blk[148:156], "        ")
	var sum int64
	for _, c := range blk {
		sum += int64(c)
	}
	copy(blk[148:156], fmt.Sprintf("%06o\x00 ", sum))
}

func TestApplyParityCrafted(t *testing.T) {
	testkit.RequireRoot(t, needsRoot)
	for _, c := range craftedCases(t) {
		runParity(t, c)
	}
}

// Escape attempts modelled on containerd's TestBreakouts table.
func TestApplyParityBreakouts(t *testing.T) {
	testkit.RequireRoot(t, needsRoot)
	etc := tree(mkdir("etc", 0o755), mkfile("etc/passwd", "inside", 0o644))
	cases := []parityCase{
		{name: "SymlinkAbsolute", layer: newTar(t).dir("etc").symlink("/etc", "localetc").file("/localetc/unbroken", "unbroken").bytes()},
		{name: "SymlinkUpAndOut", layer: newTar(t).dir("etc").dir("dummy").symlink("/dummy/../etc", "localetc").file("/localetc/unbroken", "u").bytes()},
		{name: "SymlinkMultipleAbsolute", layer: newTar(t).dir("etc").dir("dummy").symlink("/etc", "/dummy/etc").symlink("/dummy/etc", "localetc").file("/dummy/etc/unbroken", "u").bytes()},
		{name: "SymlinkMultipleRelative", layer: newTar(t).dir("etc").dir("dummy").symlink("/etc", "/dummy/etc").symlink("./dummy/etc", "localetc").file("/dummy/etc/unbroken", "u").bytes()},
		{name: "SymlinkEmptyFile", layer: newTar(t).dir("etc").file("etc/emptied", "notempty").symlink("/etc", "localetc").file("/localetc/emptied", "").bytes()},
		{name: "HardlinkRelative", layer: newTar(t).dir("etc").file("/etc/passwd", "inside").dir("breakouts").symlink("../../etc", "breakouts/d1").link("/breakouts/d1/passwd", "breakouts/mypasswd").bytes()},
		{name: "HardlinkDownAndOut", layer: newTar(t).dir("etc").file("/etc/passwd", "inside").dir("breakouts").dir("downandout").symlink("../downandout/../../etc", "breakouts/d1").link("/breakouts/d1/passwd", "breakouts/mypasswd").bytes()},
		{name: "HardlinkAbsolute", layer: newTar(t).dir("etc").file("/etc/passwd", "inside").symlink("/etc", "localetc").link("/localetc/passwd", "localpasswd").bytes()},
		{name: "HardlinkRelativeLong", layer: newTar(t).dir("etc").file("/etc/passwd", "inside").symlink("../../../../../../../etc", "localetc").link("/localetc/passwd", "localpasswd").bytes()},
		{name: "HardlinkRelativeUpAndOut", layer: newTar(t).dir("etc").file("/etc/passwd", "inside").symlink("upandout/../../../etc", "localetc").link("/localetc/passwd", "localpasswd").bytes()},
		{name: "HardlinkDirectRelative", layer: newTar(t).dir("etc").file("/etc/passwd", "inside").link("../../../../../etc/passwd", "localpasswd").bytes()},
		{name: "HardlinkDirectAbsolute", layer: newTar(t).dir("etc").file("/etc/passwd", "inside").link("/etc/passwd", "localpasswd").bytes()},
		{name: "SymlinkParentDirectory", layer: newTar(t).dir("etc").file("/etc/passwd", "inside").symlink("/etc/", "..").link("/etc/passwd", "localpasswd").bytes()},
		{name: "SymlinkEmptyFilename", layer: newTar(t).dir("etc").file("/etc/passwd", "inside").symlink("/etc/", "").link("/etc/passwd", "localpasswd").bytes()},
		{name: "SymlinkParentRelative", layer: newTar(t).dir("etc").file("/etc/passwd", "inside").symlink("/etc/", "localetc/sub/..").link("/etc/passwd", "/localetc/localpasswd").bytes()},
		{name: "SymlinkSlashEnded", layer: newTar(t).dir("etc").file("/etc/passwd", "inside").dir("localetc/").link("/etc/passwd", "/localetc/localpasswd").bytes()},
		{name: "SymlinkOverrideDirectory", setup: tree(mkdir("etc", 0o755), mkfile("etc/passwd", "inside", 0o644), mkdir("localetc", 0o755)), layer: newTar(t).symlink("/etc", "localetc").link("/etc/passwd", "/localetc/localpasswd").bytes()},
		{name: "SymlinkOverrideDirectoryRelative", setup: tree(mkdir("etc", 0o755), mkfile("etc/passwd", "inside", 0o644), mkdir("localetc", 0o755)), layer: newTar(t).symlink("../../etc", "localetc").link("/etc/passwd", "/localetc/localpasswd").bytes()},
		{name: "DirectoryOverrideSymlink", setup: tree(mkdir("etc", 0o755), mkfile("etc/passwd", "inside", 0o644), mksymlink("/etc", "localetc")), layer: newTar(t).dir("/localetc/").link("/etc/passwd", "/localetc/localpasswd").bytes()},
		{name: "DirectoryOverrideSymlinkAndHardlink", setup: tree(mkdir("etc", 0o755), mkfile("etc/passwd", "inside", 0o644), mksymlink("etc", "localetc"), mkhardlink("etc/passwd", "etc/localpasswd")), layer: newTar(t).dir("/localetc/").file("/localetc/localpasswd", "different").bytes()},
		{name: "WhiteoutRootParent", setup: etc, layer: newTar(t).file(".wh...", "").bytes()},
		{name: "WhiteoutParent", setup: etc, layer: newTar(t).file("etc/.wh...", "").bytes()},
		{name: "WhiteoutRoot", setup: etc, layer: newTar(t).file(".wh..", "").bytes()},
		{name: "WhiteoutCurrentDirectory", setup: etc, layer: newTar(t).file("etc/.wh..", "").bytes()},
		{name: "WhiteoutSymlink", setup: tree(etc, mksymlink("/etc", "localetc")), layer: newTar(t).file(".wh.localetc", "").bytes()},
		{name: "WhiteoutSymlinkPath", setup: tree(etc, mkfile("etc/whitedout", "w", 0o644), mksymlink("/etc", "localetc")), layer: newTar(t).file("localetc/.wh.whitedout", "").bytes()},
		{name: "WhiteoutDirectoryName", setup: tree(etc, mksymlink("/etc", "localetc")), layer: newTar(t).file(".wh.etc/somefile", "non-empty").bytes()},
		{name: "WhiteoutDeadSymlinkParent", setup: tree(etc, mksymlink("/dne", "localetc")), layer: newTar(t).file("localetc/.wh.etc", "").bytes()},
		{name: "WhiteoutRelativePath", setup: tree(etc, mksymlink("/dne", "localetc")), layer: newTar(t).file("dne/../.wh.etc", "").bytes()},
		{name: "WhiteoutOpaque", setup: tree(etc, mkfile("etc/shadow", "s", 0o600)), layer: newTar(t).file("etc/.wh..wh..opq", "").file("etc/group", "all groups").bytes()},
		{name: "WhiteoutOpaqueOutOfOrder", setup: etc, layer: newTar(t).file("etc/group", "all groups").file("etc/.wh..wh..opq", "").bytes()},
		{name: "SymlinkOverridePath", layer: newTar(t).dir("foo").dir("foo/tmp").file("foo/tmp/breakout", "\x00\x01\x02").symlink("/", "foo").file("foo/tmp/breakout", "\x03\x04\x05").dir("foo").dir("foo/tmp").file("foo/tmp/breakout", "\x06\x07\x08").bytes()},
		{name: "HardlinkSymlinkBeforeCreateTarget", layer: newTar(t).dir("etc").symlink("/etc/passwd", "localpasswd").link("localpasswd", "localpasswd-dup").file("/etc/passwd", "after").bytes()},
		{name: "HardlinkSymlinkRelative", layer: newTar(t).dir("etc").file("/etc/passwd", "inside").symlink("../../../../../etc/passwd", "passwdlink").link("/passwdlink", "localpasswd").bytes()},
		{name: "HardlinkSymlinkAbsolute", layer: newTar(t).dir("etc").file("/etc/passwd", "inside").symlink("/etc/passwd", "passwdlink").link("/passwdlink", "localpasswd").bytes()},
		{name: "HardlinkSymlinkChmod", layer: newTar(t).symlink("/outside/perm400", "/outside/also-exists-outside-root").link("/outside/also-exists-outside-root", "sketchylink").bytes()},
	}
	for _, c := range cases {
		runParity(t, c)
	}
}

// randomTree fills dir with a seeded mix of entries.
func randomTree(t *testing.T, dir string, rng *rand.Rand, n int) {
	dirs := []string{""}
	for i := 0; i < n; i++ {
		parent := dirs[rng.Intn(len(dirs))]
		name := filepath.Join(parent, fmt.Sprintf("e%d", rng.Intn(40)))
		p := filepath.Join(dir, name)
		if _, err := os.Lstat(p); err == nil {
			continue
		}
		switch k := rng.Intn(10); {
		case k < 4:
			data := make([]byte, rng.Intn(5000))
			rng.Read(data)
			os.WriteFile(p, data, os.FileMode(0o600+rng.Intn(0o177)))
			if rng.Intn(4) == 0 {
				unix.Lsetxattr(p, "user.r", []byte(fmt.Sprint(rng.Int())), 0)
			}
			if rng.Intn(8) == 0 {
				os.Chown(p, rng.Intn(3000), rng.Intn(3000))
			}
		case k < 6:
			os.Mkdir(p, 0o755)
			dirs = append(dirs, name)
		case k < 7:
			os.Symlink(fmt.Sprintf("../e%d", rng.Intn(40)), p)
		case k < 8:
			if len(dirs) > 0 {
				os.Link(filepath.Join(dir, dirs[0], "e1"), p)
			}
		case k < 9:
			unix.Mknod(p, unix.S_IFIFO|0o644, 0)
		default:
			unix.Mknod(p, unix.S_IFCHR|0o600, int(unix.Mkdev(uint32(rng.Intn(300)), uint32(rng.Intn(300)))))
		}
		ts := []unix.Timespec{unix.NsecToTimespec(int64(rng.Intn(2e9)) * 1e9), unix.NsecToTimespec(int64(rng.Intn(2e9))*1e9 + int64(rng.Intn(3))*int64(rng.Intn(1e9)))}
		unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
	}
}

func TestApplyParityWriteDiff(t *testing.T) {
	testkit.RequireRoot(t, needsRoot)
	for seed := int64(1); seed <= 12; seed++ {
		rng := rand.New(rand.NewSource(seed))
		work := t.TempDir()
		lower, upper := filepath.Join(work, "lower"), filepath.Join(work, "upper")
		os.MkdirAll(lower, 0o755)
		os.MkdirAll(upper, 0o755)
		randomTree(t, lower, rng, 60)
		testkit.CopyTree(t, lower, upper)
		// Mutate: delete some, add some, replace some.
		filepath.Walk(upper, func(p string, fi os.FileInfo, err error) error {
			if err == nil && p != upper && rng.Intn(6) == 0 {
				os.RemoveAll(p)
				if rng.Intn(2) == 0 {
					os.WriteFile(p, []byte("replaced"), 0o644)
				}
			}
			return nil
		})
		randomTree(t, upper, rng, 40)
		var layer bytes.Buffer
		if err := archive.WriteDiff(context.Background(), &layer, lower, upper); err != nil {
			t.Fatal(err)
		}
		l := lower
		runParity(t, parityCase{
			name:  fmt.Sprintf("seed%d", seed),
			layer: gz(t, layer.Bytes()),
			setup: func(t *testing.T, root string) { testkit.CopyTree(t, l, root) },
			lower: func(t *testing.T, root string) { testkit.CopyTree(t, l, root) },
		})
	}
}

func TestApplyParityGNUTar(t *testing.T) {
	testkit.RequireRoot(t, needsRoot)
	rng := rand.New(rand.NewSource(42))
	src := t.TempDir()
	randomTree(t, src, rng, 150)
	os.MkdirAll(filepath.Join(src, strings.Repeat("long", 30), strings.Repeat("name", 30)), 0o755)
	os.WriteFile(filepath.Join(src, strings.Repeat("long", 30), strings.Repeat("name", 30), strings.Repeat("file", 40)), []byte("x"), 0o644)
	for _, format := range []string{"gnu", "posix", "ustar", "oldgnu"} {
		args := []string{"-C", src, "--format=" + format, "-cf", "-"}
		if format == "posix" {
			args = append(args, "--xattrs", "--xattrs-include=*", "--pax-option=globexthdr.name=/tmp/GlobalHead.%n")
		}
		out, err := exec.Command("tar", append(args, ".")...).Output()
		if err != nil && format != "ustar" {
			t.Fatalf("tar --format=%s: %v", format, err)
		}
		runParity(t, parityCase{name: "gnutar-" + format, layer: out, setup: baseTree})
	}
}

func TestApplyParitySparse(t *testing.T) {
	testkit.RequireRoot(t, needsRoot)
	src := t.TempDir()
	mk := func(name string, size int64, chunks map[int64]string) {
		f, err := os.Create(filepath.Join(src, name))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := f.Truncate(size); err != nil {
			t.Fatal(err)
		}
		for off, data := range chunks {
			if _, err := f.WriteAt([]byte(data), off); err != nil {
				t.Fatal(err)
			}
		}
	}
	mk("holes", 1<<20, map[int64]string{0: "start", 300000: "middle", 1<<20 - 3: "end"})
	mk("allhole", 1<<19, nil)
	mk("tail", 100000, map[int64]string{8192: strings.Repeat("d", 10000)})
	testkit.Settle(t, src)
	for _, v := range []string{"0.0", "0.1", "1.0"} {
		out, err := exec.Command("tar", "-C", src, "--format=posix", "--sparse", "--sparse-version="+v, "-cf", "-", ".").Output()
		if err != nil {
			t.Fatalf("tar sparse %s: %v", v, err)
		}
		if !bytes.Contains(out, []byte("GNU.sparse")) {
			t.Fatalf("tar --sparse-version=%s wrote no sparse records", v)
		}
		runParity(t, parityCase{name: "sparse-" + v, layer: out})
	}
	out, err := exec.Command("tar", "-C", src, "--format=gnu", "--sparse", "-cf", "-", ".").Output()
	if err != nil {
		t.Fatal(err)
	}
	runParity(t, parityCase{name: "sparse-oldgnu", layer: out})
}
