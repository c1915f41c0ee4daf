package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/pkg/archive"
	"github.com/klauspost/compress/zstd"
	digest "github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"
)

// Media types only a stream processor turns into a tar. containerd takes a manifest entry
// for a layer by the prefix application/vnd.oci.image.layer., and decompresses any
// ...v1.tar+...+gzip itself, so these are neither. "handled" has a processor in the daemons
// and in layerdiff-diffd, "daemon-only" only in the daemons, "unknown" has none.
const (
	handledMediaType    = "application/vnd.oci.image.layer.v1.e2e-handled"
	daemonOnlyMediaType = "application/vnd.oci.image.layer.v1.e2e-daemon-only"
	unknownMediaType    = "application/vnd.oci.image.layer.v1.e2e-unknown"
)

var (
	handledProcessor    = gunzipProcessor("e2e.handled", handledMediaType)
	daemonOnlyProcessor = gunzipProcessor("e2e.daemon-only", daemonOnlyMediaType)
)

func gunzipProcessor(id, mediaType string) streamProcessor {
	gz, err := exec.LookPath("gzip")
	if err != nil {
		gz = "/bin/gzip"
	}
	return streamProcessor{ID: id, Accepts: mediaType, Returns: ocispec.MediaTypeImageLayer, Path: gz, Args: []string{"-dc"}}
}

// blob is one layer: its file, digest, size and media type, and its uncompressed diffID.
type blob struct {
	path      string
	mediaType string
	digest    digest.Digest
	size      int64
	diffID    digest.Digest
}

func (b blob) as(mediaType string) blob { b.mediaType = mediaType; return b }

// testImage is an OCI image archive ready for `ctr images import`.
type testImage struct {
	name             string // docker.io/library/e2e:TAG
	archive          string
	layers           []blob
	config, manifest []byte
}

func (i *testImage) diffIDs() []digest.Digest {
	var ids []digest.Digest
	for _, l := range i.layers {
		ids = append(ids, l.diffID)
	}
	return ids
}

// chainID names the image's top snapshot in every snapshotter.
func (i *testImage) chainID() string { return identity.ChainID(i.diffIDs()).String() }

type testImages struct {
	base, change, tail  blob
	full                *testImage // real tree + change layer + zstd tail
	handled, daemonOnly *testImage // the change layer under a stream-processor media type
	unknown, corrupt    *testImage
	realFiles           int
}

// realTrees are directories of this machine the base layer is copied from.
var realTrees = []string{"/usr/lib/python3*", "/usr/share/zoneinfo", "/usr/share/perl", "/usr/include"}

// buildImages writes the layers and OCI archives the tests import.
func buildImages(dir string) (*testImages, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	ti := &testImages{}
	staging := filepath.Join(dir, "staging")
	n, err := stageBase(staging)
	if err != nil {
		return nil, fmt.Errorf("staging the base tree: %w", err)
	}
	ti.realFiles = n
	if ti.base, err = baseLayer(dir, staging); err != nil {
		return nil, fmt.Errorf("base layer: %w", err)
	}
	realDir, realSub, realFile, err := realTargets(staging)
	if err != nil {
		return nil, err
	}
	changeTar, err := changeLayer(realDir, realSub, realFile)
	if err != nil {
		return nil, err
	}
	if ti.change, err = writeBlob(dir, changeTar, ocispec.MediaTypeImageLayerGzip); err != nil {
		return nil, err
	}
	tailTar, err := tailLayer()
	if err != nil {
		return nil, err
	}
	if ti.tail, err = writeBlob(dir, tailTar, ocispec.MediaTypeImageLayerZstd); err != nil {
		return nil, err
	}
	corruptTar := bytes.Clone(changeTar)
	// The first header's checksum field, now wrong: a layer damaged in the middle of a pull.
	copy(corruptTar[148:156], "0000000\x00")
	corrupt, err := writeBlob(dir, corruptTar, ocispec.MediaTypeImageLayerGzip)
	if err != nil {
		return nil, err
	}

	for _, im := range []struct {
		dst    **testImage
		tag    string
		layers []blob
	}{
		{&ti.full, "full", []blob{ti.base, ti.change, ti.tail}},
		{&ti.handled, "handled", []blob{ti.base, ti.change.as(handledMediaType)}},
		{&ti.daemonOnly, "daemon-only", []blob{ti.base, ti.change.as(daemonOnlyMediaType)}},
		{&ti.unknown, "unknown", []blob{ti.base, ti.change.as(unknownMediaType)}},
		{&ti.corrupt, "corrupt", []blob{ti.base, corrupt}},
	} {
		img := &testImage{name: "docker.io/library/e2e:" + im.tag, archive: filepath.Join(dir, im.tag+".tar"), layers: im.layers}
		if err := writeArchive(img); err != nil {
			return nil, fmt.Errorf("image %s: %w", im.tag, err)
		}
		*im.dst = img
	}
	return ti, nil
}

// stageBase copies the real trees into staging/ (cp -a: owners, modes, times, xattrs and
// hardlinks kept; up to about 2000 entries) next to a small synthetic tree the change layer
// edits; it returns the number of entries copied.
func stageBase(staging string) (int, error) {
	copied, err := stageReal(staging, 2000)
	if err != nil {
		return 0, err
	}
	return copied, stageSynthetic(staging)
}

// stageReal copies whole real trees into staging until at least limit entries are there.
func stageReal(staging string, limit int) (int, error) {
	var copied int
	for _, pattern := range realTrees {
		matches, _ := filepath.Glob(pattern)
		for _, src := range matches {
			if fi, err := os.Stat(src); err != nil || !fi.IsDir() {
				continue
			}
			dst := filepath.Join(staging, src)
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				return 0, err
			}
			if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
				return 0, fmt.Errorf("cp -a %s: %v: %s", src, err, out)
			}
			n := 0
			_ = filepath.Walk(dst, func(string, os.FileInfo, error) error { n++; return nil })
			copied += n
			if copied >= limit {
				return copied, nil
			}
		}
	}
	if copied < 1000 {
		return 0, fmt.Errorf("found only %d entries in %v; the e2e image needs a real tree of thousands", copied, realTrees)
	}
	return copied, nil
}

// stageSynthetic adds the tree the change layer edits, every entry at a fixed time.
func stageSynthetic(staging string) error {
	base := filepath.Join(staging, "e2e", "base")
	when := time.Unix(1700000000, 123456789)
	files := map[string]string{
		"dir1/a": "a\n", "dir1/b": "b\n", "dir1/c": "c\n", "dir2/x": "x\n", "dir2/y": "y\n",
		"file1": "one\n", "todir": "a file that becomes a directory\n",
		"opq/old1": "1\n", "opq/old2": "2\n", "opq/sub/old3": "3\n", "hl1": "hardlinked\n",
		"tochange/inner": "a directory that becomes a file\n",
	}
	for name, data := range files {
		p := filepath.Join(base, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			return err
		}
	}
	if err := os.Link(filepath.Join(base, "hl1"), filepath.Join(base, "hl2")); err != nil {
		return err
	}
	if err := os.Symlink("dir1/a", filepath.Join(base, "sym")); err != nil {
		return err
	}
	if err := unix.Mkfifo(filepath.Join(base, "fifo"), 0o600); err != nil {
		return err
	}
	// Every synthetic entry gets a fixed time, directories last (deepest first).
	var dirs []string
	err := filepath.Walk(filepath.Join(staging, "e2e"), func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if fi.IsDir() {
			dirs = append(dirs, p)
			return nil
		}
		return lutimes(p, when)
	})
	if err != nil {
		return err
	}
	sort.Sort(sort.Reverse(sort.StringSlice(dirs)))
	for _, d := range append(dirs, staging, filepath.Join(staging, "usr")) {
		if _, err := os.Lstat(d); err == nil {
			if err := lutimes(d, when); err != nil {
				return err
			}
		}
	}
	return nil
}

func lutimes(p string, t time.Time) error {
	ts := []unix.Timespec{unix.NsecToTimespec(t.UnixNano()), unix.NsecToTimespec(t.UnixNano())}
	return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
}

// realTargets picks what the change layer deletes from the real tree: a directory with
// entries, one of its subdirectories and one of its files.
func realTargets(staging string) (dir, sub, file string, err error) {
	err = filepath.Walk(staging, func(p string, fi os.FileInfo, err error) error {
		if err != nil || dir != "" || !fi.IsDir() || strings.Contains(p, "/e2e") {
			return err
		}
		entries, err := os.ReadDir(p)
		if err != nil {
			return err
		}
		var s, f string
		for _, e := range entries {
			if e.IsDir() && s == "" {
				s = e.Name()
			} else if e.Type().IsRegular() && f == "" {
				f = e.Name()
			}
		}
		if s != "" && f != "" && len(entries) > 5 {
			rel, _ := filepath.Rel(staging, p)
			dir, sub, file = rel, s, f
		}
		return nil
	})
	if err == nil && dir == "" {
		err = fmt.Errorf("no directory with subdirectories and files in %s", staging)
	}
	return
}

// baseLayer is containerd's own diff of the staged tree against an empty one, gzip.
func baseLayer(dir, staging string) (blob, error) {
	empty := filepath.Join(dir, "empty")
	if err := os.MkdirAll(empty, 0o755); err != nil {
		return blob{}, err
	}
	var tarBuf bytes.Buffer
	if err := archive.WriteDiff(context.Background(), &tarBuf, empty, staging); err != nil {
		return blob{}, err
	}
	return writeBlob(dir, tarBuf.Bytes(), ocispec.MediaTypeImageLayerGzip)
}

// tarBuilder writes a layer by hand, emitting every missing parent directory first (as
// containerd's ChangeWriter does), so no directory's time depends on when it was applied.
type tarBuilder struct {
	buf  bytes.Buffer
	tw   *tar.Writer
	dirs map[string]bool
	when time.Time
}

func newTarBuilder() *tarBuilder {
	b := &tarBuilder{dirs: map[string]bool{}, when: time.Unix(1710000000, 0)}
	b.tw = tar.NewWriter(&b.buf)
	return b
}

func (b *tarBuilder) parents(name string) error {
	dir := path.Dir(strings.TrimSuffix(name, "/"))
	if dir == "." || b.dirs[dir] {
		return nil
	}
	if err := b.parents(dir); err != nil {
		return err
	}
	b.dirs[dir] = true
	return b.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir + "/", Mode: 0o755, ModTime: b.when, Format: tar.FormatPAX})
}

func (b *tarBuilder) add(h *tar.Header, data string) error {
	if err := b.parents(h.Name); err != nil {
		return err
	}
	if h.ModTime.IsZero() {
		h.ModTime = b.when
	}
	if h.Mode == 0 && h.Typeflag != tar.TypeReg {
		h.Mode = 0o755
	}
	h.Format = tar.FormatPAX
	if h.Typeflag == tar.TypeReg {
		h.Size = int64(len(data))
	}
	if h.Typeflag == tar.TypeDir {
		b.dirs[strings.TrimSuffix(h.Name, "/")] = true
	}
	if err := b.tw.WriteHeader(h); err != nil {
		return err
	}
	_, err := io.WriteString(b.tw, data)
	return err
}

func (b *tarBuilder) file(name, data string, mode int64) error {
	return b.add(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode}, data)
}

func (b *tarBuilder) whiteout(name string) error {
	return b.add(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0, ModTime: time.Unix(0, 0)}, "")
}

func (b *tarBuilder) bytes() ([]byte, error) {
	if err := b.tw.Close(); err != nil {
		return nil, err
	}
	return b.buf.Bytes(), nil
}

// A file capability (VFS_CAP_REVISION_2, effective, permitted CAP_NET_RAW), as setcap writes.
var netRawCapability = string([]byte{0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})

// changeLayer deletes, replaces and adds on top of the base: whiteouts of directories, files
// and of nothing, an opaque directory, type changes both ways, hardlinks, devices, a fifo, a
// capability and a user xattr, setuid and sticky modes, owners, nanosecond times, and names
// long in every way (255-byte components, paths past 100 and 255 bytes, non-ASCII, long
// symlink targets).
func changeLayer(realDir, realSub, realFile string) ([]byte, error) {
	b := newTarBuilder()
	long := strings.Repeat("n", 255)
	deep := "e2e/long/" + strings.Repeat("deep-component-of-a-path/", 14) + "file"
	steps := []func() error{
		func() error { return b.whiteout(path.Join(realDir, ".wh."+realSub)) },
		func() error { return b.whiteout(path.Join(realDir, ".wh."+realFile)) },
		func() error { return b.whiteout("e2e/base/.wh.dir2") },
		func() error { return b.whiteout("e2e/base/dir1/.wh.b") },
		func() error { return b.whiteout("e2e/base/.wh.not-there") },
		func() error { return b.whiteout("e2e/base/.wh.hl2") },
		func() error { return b.add(&tar.Header{Typeflag: tar.TypeDir, Name: "e2e/base/opq/", Mode: 0o750}, "") },
		func() error { return b.whiteout("e2e/base/opq/.wh..wh..opq") },
		func() error { return b.file("e2e/base/opq/new", "after the opaque marker\n", 0o640) },
		func() error { return b.file("e2e/base/tochange", "was a directory\n", 0o600) },
		func() error { return b.file("e2e/base/todir/inner", "was a file\n", 0o644) },
		func() error { return b.file("e2e/base/file1", "changed\n", 0o600) },
		func() error {
			return b.add(&tar.Header{Typeflag: tar.TypeSymlink, Name: "e2e/base/sym", Linkname: "dir1/c"}, "")
		},
		func() error { return b.file("e2e/links/src", "one inode, three names\n", 0o644) },
		func() error {
			return b.add(&tar.Header{Typeflag: tar.TypeLink, Name: "e2e/links/ln1", Linkname: "e2e/links/src"}, "")
		},
		func() error {
			return b.add(&tar.Header{Typeflag: tar.TypeLink, Name: "e2e/links/sub/ln2", Linkname: "e2e/links/src"}, "")
		},
		func() error {
			return b.add(&tar.Header{Typeflag: tar.TypeChar, Name: "e2e/dev/null", Mode: 0o666, Devmajor: 1, Devminor: 3}, "")
		},
		func() error {
			return b.add(&tar.Header{Typeflag: tar.TypeBlock, Name: "e2e/dev/loop0", Mode: 0o660, Devmajor: 7, Devminor: 0, Gid: 6}, "")
		},
		func() error {
			return b.add(&tar.Header{Typeflag: tar.TypeFifo, Name: "e2e/dev/fifo", Mode: 0o644}, "")
		},
		func() error {
			return b.add(&tar.Header{Typeflag: tar.TypeReg, Name: "e2e/bin/ping", Mode: 0o4755, PAXRecords: map[string]string{
				"SCHILY.xattr.security.capability": netRawCapability,
				"SCHILY.xattr.user.e2e":            "kept",
			}}, "#!/bin/sh\necho ping\n")
		},
		func() error {
			return b.add(&tar.Header{Typeflag: tar.TypeDir, Name: "e2e/tmp/", Mode: 0o1777}, "")
		},
		func() error {
			return b.add(&tar.Header{Typeflag: tar.TypeReg, Name: "e2e/owned", Mode: 0o640, Uid: 1234, Gid: 5678,
				ModTime: time.Unix(1720000000, 987654321)}, "owned by someone else\n")
		},
		func() error { return b.file("e2e/long/"+long, "255-byte name\n", 0o644) },
		func() error { return b.file(deep, "deep\n", 0o644) },
		func() error { return b.file("e2e/long/ünïcödé-ñame", "non-ASCII\n", 0o644) },
		func() error {
			return b.add(&tar.Header{Typeflag: tar.TypeSymlink, Name: "e2e/long/far", Linkname: "../" + strings.Repeat("x/", 120) + "end"}, "")
		},
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return nil, err
		}
	}
	return b.bytes()
}

// tailLayer (zstd) breaks a hardlink group by replacing one name, deletes a fifo and a file
// the opaque directory got, and adds a file.
func tailLayer() ([]byte, error) {
	b := newTarBuilder()
	b.when = time.Unix(1730000000, 0)
	for _, s := range []func() error{
		func() error { return b.file("e2e/links/ln1", "no longer linked\n", 0o644) },
		func() error { return b.whiteout("e2e/dev/.wh.fifo") },
		func() error { return b.whiteout("e2e/base/opq/.wh.new") },
		func() error { return b.file("e2e/z", "zstd\n", 0o644) },
	} {
		if err := s(); err != nil {
			return nil, err
		}
	}
	return b.bytes()
}

// writeBlob compresses tarBytes as mediaType says and stores the blob under dir.
func writeBlob(dir string, tarBytes []byte, mediaType string) (blob, error) {
	var out bytes.Buffer
	switch mediaType {
	case ocispec.MediaTypeImageLayerGzip:
		zw := gzip.NewWriter(&out)
		if _, err := zw.Write(tarBytes); err != nil {
			return blob{}, err
		}
		if err := zw.Close(); err != nil {
			return blob{}, err
		}
	case ocispec.MediaTypeImageLayerZstd:
		zw, err := zstd.NewWriter(&out)
		if err != nil {
			return blob{}, err
		}
		if _, err := zw.Write(tarBytes); err != nil {
			return blob{}, err
		}
		if err := zw.Close(); err != nil {
			return blob{}, err
		}
	default:
		out.Write(tarBytes)
	}
	d := digest.FromBytes(out.Bytes())
	p := filepath.Join(dir, d.Encoded())
	if err := os.WriteFile(p, out.Bytes(), 0o644); err != nil {
		return blob{}, err
	}
	return blob{path: p, mediaType: mediaType, digest: d, size: int64(out.Len()), diffID: digest.FromBytes(tarBytes)}, nil
}

// writeArchive writes an OCI image layout tar of one linux/amd64 image.
func writeArchive(img *testImage) error {
	config, err := json.Marshal(ocispec.Image{
		Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: img.diffIDs()},
	})
	if err != nil {
		return err
	}
	configDesc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(config), Size: int64(len(config))}
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: configDesc}
	m.SchemaVersion = 2
	for _, l := range img.layers {
		m.Layers = append(m.Layers, ocispec.Descriptor{MediaType: l.mediaType, Digest: l.digest, Size: l.size})
	}
	manifest, err := json.Marshal(m)
	if err != nil {
		return err
	}
	img.config, img.manifest = config, manifest
	tag := img.name[strings.LastIndex(img.name, ":")+1:]
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{{
		MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(manifest), Size: int64(len(manifest)),
		Platform:    &ocispec.Platform{OS: "linux", Architecture: "amd64"},
		Annotations: map[string]string{images.AnnotationImageName: img.name, ocispec.AnnotationRefName: tag},
	}}}
	idx.SchemaVersion = 2
	index, err := json.Marshal(idx)
	if err != nil {
		return err
	}

	f, err := os.Create(img.archive)
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	add := func(name string, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data))}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	if err := add(ocispec.ImageLayoutFile, []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	if err := add("index.json", index); err != nil {
		return err
	}
	seen := map[digest.Digest]bool{}
	for _, data := range [][]byte{config, manifest} {
		if err := add("blobs/sha256/"+digest.FromBytes(data).Encoded(), data); err != nil {
			return err
		}
	}
	for _, l := range img.layers {
		if seen[l.digest] {
			continue
		}
		seen[l.digest] = true
		data, err := os.ReadFile(l.path)
		if err != nil {
			return err
		}
		if err := add("blobs/sha256/"+l.digest.Encoded(), data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return f.Close()
}
