package apply

import (
	"archive/tar"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/layerdiff/layerdiff/go/internal/testkit"
)

// TestApplyParityMutated is differential fuzzing in miniature: seeded byte mutations of a
// varied layer (header fields, PAX records, names, data) applied by both implementations,
// which must both fail or produce identical trees (and never write outside the root).
func TestApplyParityMutated(t *testing.T) {
	testkit.RequireRoot(t, needsRoot)
	base := newTar(t).
		dir("etc/").
		file("etc/passwd", "root:x:0:0").
		add(&tar.Header{Typeflag: tar.TypeReg, Name: "x/f", PAXRecords: map[string]string{"SCHILY.xattr.user.a": "1"}}, []byte("data")).
		symlink("../etc", "x/l").
		link("etc/passwd", "x/h").
		add(&tar.Header{Typeflag: tar.TypeChar, Name: "x/c", Devmajor: 1, Devminor: 3}, nil).
		file("x/.wh.gone", "").
		file("etc/.wh..wh..opq", "").
		add(&tar.Header{Typeflag: tar.TypeReg, Name: "long/" + string(make([]byte, 0)) + "name-that-is-quite-long-" + fmt.Sprint(1234567890) + "-and-longer-still-to-need-pax-or-gnu-records-beyond-100-bytes", Format: tar.FormatGNU}, []byte("g")).
		add(&tar.Header{Typeflag: tar.TypeReg, Name: "paxed", Uid: 1 << 22, Format: tar.FormatPAX}, []byte("p")).
		bytes()
	// A second base from GNU tar: PAX sparse maps (1.0 keeps the map in the data section).
	src := t.TempDir()
	f, _ := os.Create(filepath.Join(src, "sparse"))
	f.Truncate(40000)
	f.WriteAt([]byte("in the middle"), 20000)
	f.Close()
	os.WriteFile(filepath.Join(src, "plain"), []byte("plain file"), 0o640)
	testkit.Settle(t, src)
	gnu, err := exec.Command("tar", "-C", src, "--format=posix", "--sparse", "--sparse-version=1.0", "-cf", "-", ".").Output()
	if err != nil {
		t.Fatal(err)
	}
	bases := [][]byte{base, gnu}

	count, seed := 150, int64(7)
	if v := os.Getenv("PARITY_MUTATIONS"); v != "" {
		fmt.Sscan(v, &count)
	}
	if v := os.Getenv("PARITY_SEED"); v != "" {
		fmt.Sscan(v, &seed)
	}
	rng := rand.New(rand.NewSource(seed))
	for i := 0; i < count; i++ {
		m := append([]byte(nil), bases[i%len(bases)]...)
		for n := 1 + rng.Intn(3); n > 0; n-- {
			pos := rng.Intn(len(m))
			switch rng.Intn(4) {
			case 0:
				m[pos] ^= byte(1 << rng.Intn(8))
			case 1:
				m[pos] = "0123456789 ./\x00xLKg5"[rng.Intn(19)]
			case 2:
				m[pos] = byte(rng.Intn(256))
			default:
				m = m[:pos]
			}
		}
		// Keep checksums valid most of the time so mutations reach the fields behind them.
		if rng.Intn(4) != 0 {
			for off := 0; off+512 <= len(m); off += 512 {
				if isHeaderLike(m[off : off+512]) {
					fixChecksum(m[off : off+512])
				}
			}
		}
		runParity(t, parityCase{name: fmt.Sprintf("mut%03d", i), layer: m, setup: baseTree, lower: lowerTree})
	}
}

// isHeaderLike: a block with a ustar magic is (probably) a header.
func isHeaderLike(b []byte) bool {
	return string(b[257:262]) == "ustar"
}
