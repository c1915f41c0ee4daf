package hostile

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"math/rand"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/layerdiff/layerdiff/go/internal/testkit"
)

// TestWriteFuzzSeeds (re)writes the checked-in seed corpora of FuzzApply (here),
// FuzzTarHeaders (../tarread) and the Rust tar_reader target (fuzz/seeds, raw files): the hostile generator's layers for a handful of seeds, the
// regression inputs of issue 10 that are tar bytes, corrupted gzip/zstd/tar samples, and
// Go's own archive/tar test archives. Run it when the generator or the list changes:
//
//	FUZZ_WRITE_SEEDS=1 go test -run '^TestWriteFuzzSeeds$' ./parity/hostile
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("FUZZ_WRITE_SEEDS") == "" {
		t.Skip("SKIPPED: writes the fuzz seed corpora only when FUZZ_WRITE_SEEDS=1")
	}
	applyDir := filepath.Join("testdata", "fuzz", "FuzzApply")
	tarDir := filepath.Join("..", "tarread", "testdata", "fuzz", "FuzzTarHeaders")
	rustDir := filepath.Join("..", "..", "..", "fuzz", "seeds", "tar_reader")
	for _, d := range []string{applyDir, tarDir, rustDir} {
		if err := os.RemoveAll(d); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(rustDir, 0o755); err != nil {
		t.Fatal(err)
	}
	seeds := fuzzSeeds(t)
	for _, s := range seeds {
		if err := os.WriteFile(filepath.Join(rustDir, s.name), s.layer, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := testkit.WriteCorpusEntry(tarDir, s.name, s.layer); err != nil {
			t.Fatal(err)
		}
		if !s.applies || readShape(s.layer).tooBig != "" {
			continue
		}
		if err := testkit.WriteCorpusEntry(applyDir, s.name, s.layer, s.overlay, s.parent); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("wrote %d seeds", len(seeds))
}

type fuzzSeed struct {
	name            string
	layer           []byte
	overlay, parent bool
	// applies: a seed for FuzzApply too (every seed is one for FuzzTarHeaders).
	applies bool
}

func fuzzSeeds(t *testing.T) []fuzzSeed {
	var out []fuzzSeed
	add := func(name string, layer []byte, overlay, parent bool) {
		out = append(out, fuzzSeed{name: name, layer: layer, overlay: overlay, parent: parent, applies: true})
	}
	// Inputs as deep as issue 10's, or declaring a 512 MiB zstd window, take containerd
	// seconds to apply, past what one fuzz input may take (10 s, on a loaded machine):
	// FuzzTarHeaders gets them as found, FuzzApply a shallower copy or none
	// (TestDeepNamesMatchContainerd and the Rust tests apply the deep ones).
	tarOnly := func(name string, layer []byte) {
		out = append(out, fuzzSeed{name: name, layer: layer})
	}
	// The hostile generator, both whiteout modes, with and without a lowerdir.
	for seed := int64(0); seed < 12; seed++ {
		g := &gen{r: rand.New(rand.NewSource(seed))}
		layer, _ := encode(g.layer())
		add("hostile-seed-"+strconv.FormatInt(seed, 10), layer, seed%4 >= 2, seed%4 == 3)
	}
	// A small well-formed layer, the base of the corrupted samples.
	plain, _ := encode([]entry{
		{hdr: tar.Header{Typeflag: tar.TypeDir, Name: "d/", Mode: 0o755, ModTime: time.Unix(1600000000, 0)}},
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "d/f", Mode: 0o644, Size: 600, ModTime: time.Unix(1600000000, 5)}, data: bytes.Repeat([]byte("layerdiff\n"), 60)},
		{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "d/l", Linkname: "../out/hx1", ModTime: time.Unix(1600000000, 0)}},
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "hx1/.wh.hx2", ModTime: time.Unix(1600000000, 0)}},
	})

	// Issue 10 regressions.
	add("star-unparsable-ctime", starBadCtime(t), false, false)
	add("gzip-fname-600", gzipWith(t, plain, func(h *gzip.Header) { h.Name = strings.Repeat("n", 600) }), false, false)
	add("gzip-fcomment-600", gzipWith(t, plain, func(h *gzip.Header) { h.Comment = strings.Repeat("c", 600) }), false, false)
	deep := func(name string) []byte {
		l, _ := encode([]entry{
			{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: 1, ModTime: time.Unix(1600000000, 0)}, data: []byte("x")},
			{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name + "d/", Mode: 0o755, ModTime: time.Unix(1600000000, 0)}},
		})
		return l
	}
	tarOnly("deep-name-2040-levels", deep(strings.Repeat("a/", 2040)+"f"))
	add("deep-name-400-levels", deep(strings.Repeat("a/", 400)+"f"), false, false)
	add("deep-name-self-300", deep(strings.Repeat("self/", 300)+"f"), true, false)
	add("deep-name-nx1-100-overlay", deep(strings.Repeat("nx1/", 100)+"f"), true, true)
	tarOnly("whiteout-deep-tree-6000", gzipWith(t, deepTreeWhiteout(6000), nil))
	add("whiteout-deep-tree-400", gzipWith(t, deepTreeWhiteout(400), nil), false, false)
	add("zstd-window-256m", zstdWindowed(t, plain, 256<<20), false, false)
	tarOnly("zstd-window-512m", zstdWindowed(t, plain, 512<<20))

	// Corrupted compressed streams and tars (and a few well-formed oddities).
	gz := gzipWith(t, plain, nil)
	zs := zstdWindowed(t, plain, 0)
	flip := func(b []byte, at int) []byte {
		c := bytes.Clone(b)
		c[(at+len(c))%len(c)] ^= 0x41
		return c
	}
	add("gzip-truncated", gz[:len(gz)/2], false, false)
	add("gzip-no-trailer", gz[:len(gz)-8], false, false)
	add("gzip-bad-crc", flip(gz, -8), false, false)
	add("gzip-bad-size", flip(gz, -2), false, false)
	add("gzip-flipped-data", flip(gz, len(gz)/2), false, false)
	add("gzip-two-members", append(bytes.Clone(gz), gzipWith(t, plain[:512], nil)...), false, false)
	add("gzip-trailing-garbage", append(bytes.Clone(gz), "garbage"...), false, false)
	add("zstd-truncated", zs[:len(zs)/2], false, false)
	add("zstd-bad-checksum", flip(zs, -1), false, false)
	add("zstd-flipped-data", flip(zs, len(zs)/2), false, false)
	add("zstd-skippable-first", append([]byte{0x50, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 'a', 'b', 'c'}, zs...), false, false)
	add("zstd-two-frames", append(bytes.Clone(zs), zs...), false, false)
	add("tar-truncated-header", plain[:700], false, false)
	add("tar-truncated-data", plain[:len(plain)-1100], false, false)
	add("tar-bad-checksum", flip(plain, 150), false, false)
	add("tar-no-end-blocks", plain[:len(plain)-1024], false, false)
	add("tar-one-end-block", plain[:len(plain)-512], false, false)
	add("tar-header-after-zero-block", append(bytes.Clone(plain[:len(plain)-1024]), append(make([]byte, 512), plain[:512]...)...), false, false)
	add("empty", nil, false, false)
	add("one-zero-block", make([]byte, 512), false, false)

	// Go's archive/tar test archives (BSD-licensed, from this Go installation): every format
	// corner its reader knows. Large sparse ones are FuzzTarHeaders seeds only.
	dir := filepath.Join(runtime.GOROOT(), "src", "archive", "tar", "testdata")
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimSuffix(e.Name(), ".base64")
		if name != e.Name() {
			if b, err = base64.StdEncoding.DecodeString(string(b)); err != nil {
				t.Fatal(err)
			}
		}
		if !strings.HasSuffix(name, ".tar") || len(b) > 64<<10 {
			continue
		}
		add("go-"+strings.TrimSuffix(name, ".tar"), b, false, false)
	}
	return out
}

// starBadCtime is a one-file STAR archive whose ctime field is not a number (issue 10: Go's
// reader rejects it, ours accepted it).
func starBadCtime(t *testing.T) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "star-file", Mode: 0o644, Size: 1,
		ModTime: time.Unix(1600000000, 0), Format: tar.FormatUSTAR}); err != nil {
		t.Fatal(err)
	}
	tw.Write([]byte("x"))
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	blk := b[:512]
	clear(blk[345:500])
	copy(blk[476:488], "00000000000\x00") // atime: fine
	copy(blk[488:500], "9999999999x\x00") // ctime: not octal
	copy(blk[508:512], "tar\x00")
	testkit.SetTarChecksum(blk)
	if !testkit.StarBadCtime(b) {
		t.Fatal("starBadCtime: not recognised as such")
	}
	return b
}

func gzipWith(t *testing.T, data []byte, edit func(*gzip.Header)) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if edit != nil {
		edit(&zw.Header)
	}
	if _, err := zw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// zstdWindowed compresses data as one frame (with a window descriptor and a checksum) and,
// when window > 0, patches its header to declare that window and no content size.
func zstdWindowed(t *testing.T, data []byte, window uint64) []byte {
	var buf bytes.Buffer
	zw, err := zstd.NewWriter(&buf, zstd.WithEncoderConcurrency(1), zstd.WithSingleSegment(false))
	if err != nil {
		t.Fatal(err)
	}
	zw.Write(data)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	if b[4]&0x20 != 0 {
		t.Fatal("zstd frame is single-segment: no window descriptor to patch")
	}
	if window > 0 {
		// Without a content size, as `zstd --long` writes from a pipe: a decoder cannot
		// bound the window by the content then.
		if fcs := []int{0, 2, 4, 8}[b[4]>>6]; fcs > 0 && b[4]&3 == 0 {
			b = append(b[:6:6], b[6+fcs:]...)
			b[4] &^= 0xc0
		}
		log := 0
		for uint64(1)<<log < window {
			log++
		}
		b[5] = byte(log-10) << 3
		if got := testkit.ZstdWindow(b); got != window {
			t.Fatalf("patched zstd window is %d, want %d", got, window)
		}
	}
	return b
}

// deepTreeWhiteout builds a chain of depth nested directories (as parents of one file, so
// that no directory times are left to set) and then whites out its top (issue 10 finding 3:
// remove_all recursed once per level).
func deepTreeWhiteout(depth int) []byte {
	l, _ := encode([]entry{
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: strings.Repeat("a/", depth) + "f", Mode: 0o644, ModTime: time.Unix(1600000000, 0)}},
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: ".wh.a", Mode: 0o644, ModTime: time.Unix(1600000000, 0)}},
	})
	return l
}
