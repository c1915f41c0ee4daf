package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/diff"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/pkg/labels"
	"github.com/containerd/containerd/v2/plugins/diff/walking"
	"github.com/containerd/errdefs"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"
)

// mutate changes an unpacked image in every way a container does: new, changed, chmodded
// and deleted files, a deleted directory, a hardlink pair, a device, a capability, a
// replaced symlink, a long name. Every entry it touches (and every directory whose listing
// changes) gets a whole-second time, so the tree is exactly what its layer carries.
func mutate(root string) error {
	when := time.Unix(1740000000, 0)
	touched := []string{}
	write := func(rel, data string, mode os.FileMode) error {
		touched = append(touched, rel)
		return os.WriteFile(filepath.Join(root, rel), []byte(data), mode)
	}
	steps := []func() error{
		func() error { return os.MkdirAll(filepath.Join(root, "e2e/new/sub"), 0o750) },
		func() error { return write("e2e/new/file", "created in the container\n", 0o644) },
		func() error {
			touched = append(touched, "e2e/new/hard")
			return os.Link(filepath.Join(root, "e2e/new/file"), filepath.Join(root, "e2e/new/hard"))
		},
		func() error {
			touched = append(touched, "e2e/new/tty")
			return unix.Mknod(filepath.Join(root, "e2e/new/tty"), unix.S_IFCHR|0o620, int(unix.Mkdev(5, 0)))
		},
		func() error {
			return unix.Setxattr(filepath.Join(root, "e2e/new/file"), "security.capability", []byte(netRawCapability), 0)
		},
		func() error { return write("e2e/base/dir1/a", "changed in the container\n", 0o600) },
		func() error { return os.Remove(filepath.Join(root, "e2e/base/dir1/c")) },
		func() error { return os.RemoveAll(filepath.Join(root, "e2e/base/todir")) },
		func() error { touched = append(touched, "e2e/z"); return os.Chmod(filepath.Join(root, "e2e/z"), 0o600) },
		func() error {
			touched = append(touched, "e2e/base/sym")
			if err := os.Remove(filepath.Join(root, "e2e/base/sym")); err != nil {
				return err
			}
			return os.Symlink("opq", filepath.Join(root, "e2e/base/sym"))
		},
		func() error { return write("e2e/new/sub/"+strings.Repeat("l", 250), "long\n", 0o644) },
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return err
		}
	}
	for _, dir := range []string{"e2e/new/sub", "e2e/new", "e2e/base/dir1", "e2e/base", "e2e"} {
		touched = append(touched, dir)
	}
	for _, rel := range touched {
		if err := lutimes(filepath.Join(root, rel), when); err != nil {
			return err
		}
	}
	return nil
}

// TestCompare: on an active overlayfs snapshot of the image, mutated, containerd's
// DiffService().Compare (fork: the plugin; proxy: layerdiff-diffd) gives the walking
// differ's diffID for every media type and with a source-date-epoch, stores the labels and
// honours the reference; committed as an image and exported with ctr, it imports into the
// stock daemon as the same tree.
func TestCompare(t *testing.T) {
	requireDaemons(t)
	for _, d := range []*daemon{env.fork, env.proxy} {
		t.Run(d.kind.String(), func(t *testing.T) { testCompare(t, d) })
	}
}

func testCompare(t *testing.T, d *daemon) {
	const ns, sn = "compare", "overlayfs"
	img := env.images.full
	importImage(t, d, ns, img, sn, false)
	ctx, done, err := d.client.WithLease(d.ctx(ns))
	if err != nil {
		t.Fatal(err)
	}
	defer done(context.WithoutCancel(ctx))

	snap := d.client.SnapshotService(sn)
	active := "e2e-active"
	upper, err := snap.Prepare(ctx, active, img.chainID())
	if err != nil {
		t.Fatal(err)
	}
	lower, err := snap.View(ctx, "e2e-lower", img.chainID())
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Remove(ctx, "e2e-lower")
	if err := mount.WithTempMount(ctx, upper, mutate); err != nil {
		t.Fatalf("mutating the active snapshot: %v", err)
	}

	epoch := time.Unix(1735000000, 0) // before the mutation: its times are clamped
	cases := []struct {
		name  string
		media string // "" = the default (gzip)
		epoch *time.Time
	}{
		{"default", "", nil},
		{"tar", ocispec.MediaTypeImageLayer, nil},
		{"zstd", ocispec.MediaTypeImageLayerZstd, nil},
		{"epoch", ocispec.MediaTypeImageLayerGzip, &epoch},
	}
	walker := walking.NewWalkingDiff(d.client.ContentStore())
	diffIDs := map[string]digest.Digest{}
	var gzipLayer ocispec.Descriptor
	before := d.counters(t)
	for _, c := range cases {
		opts := func(who string) []diff.Opt {
			o := []diff.Opt{diff.WithReference("e2e-" + who + "-" + c.name), diff.WithLabels(map[string]string{"e2e.case": c.name})}
			if c.media != "" {
				o = append(o, diff.WithMediaType(c.media))
			}
			if c.epoch != nil {
				o = append(o, diff.WithSourceDateEpoch(c.epoch))
			}
			return o
		}
		ours, err := d.client.DiffService().Compare(ctx, lower, upper, opts("ours")...)
		if err != nil {
			t.Fatalf("%s: DiffService().Compare: %v", c.name, err)
		}
		// containerd's walking differ, in this process, on the same mounts.
		theirs, err := walker.Compare(ctx, lower, upper, opts("walking")...)
		if err != nil {
			t.Fatalf("%s: walking Compare: %v", c.name, err)
		}
		oursID, oursLabels := uncompressed(t, d, ctx, ours)
		theirsID, _ := uncompressed(t, d, ctx, theirs)
		if oursID != theirsID || ours.MediaType != theirs.MediaType {
			t.Errorf("%s: layerdiff %s %s, walking %s %s", c.name, ours.MediaType, oursID, theirs.MediaType, theirsID)
		}
		if oursLabels["e2e.case"] != c.name {
			t.Errorf("%s: the blob's labels %v lack e2e.case=%s", c.name, oursLabels, c.name)
		}
		diffIDs[c.name] = oursID
		if c.name == "default" {
			gzipLayer = ours
		}
	}
	// A media type neither differ writes: layerdiff answers not implemented, the diff
	// service tries walking, and the caller gets walking's answer.
	const unsupported = "application/vnd.oci.image.layer.v1.tar+e2e-unsupported"
	_, ours := d.client.DiffService().Compare(ctx, lower, upper, diff.WithMediaType(unsupported))
	_, theirs := walker.Compare(ctx, lower, upper, diff.WithMediaType(unsupported))
	if !errdefs.IsNotImplemented(ours) || theirs == nil || !strings.HasPrefix(ours.Error(), theirs.Error()) || strings.Contains(ours.Error(), "\n") {
		t.Errorf("unsupported media type: %v, want walking's %v", ours, theirs)
	}
	wantCounts(t, d, before, map[string]int{"compares/ok": len(cases), "compares/not_implemented": 1})
	if d.kind == proxy {
		// containerd passes the namespace to its proxy plugins but not the lease: diffd holds
		// each blob with a lease of its own until the client references it.
		ls, err := d.client.LeasesService().List(ctx, `labels."layerdiff.io/diffd"`)
		if err != nil || len(ls) != len(cases) {
			t.Errorf("diffd's leases: %d (%v), want one per compare (%d)", len(ls), err, len(cases))
		}
	}
	if diffIDs["epoch"] == diffIDs["default"] {
		t.Errorf("the source-date-epoch did not reach the differ: same diffID %s with and without", diffIDs["epoch"])
	}
	if diffIDs["tar"] != diffIDs["default"] || diffIDs["zstd"] != diffIDs["default"] {
		t.Errorf("one tree, several diffIDs: %v", diffIDs)
	}

	// Commit, make it an image, export it with ctr, import it into the stock daemon.
	const committed = "e2e-committed"
	if err := snap.Commit(ctx, committed, active); err != nil {
		t.Fatal(err)
	}
	name := "docker.io/library/e2e:committed-" + d.kind.String()
	if err := createImage(ctx, d, name, img, gzipLayer, diffIDs["default"]); err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(env.tmp, "images", "committed-"+d.kind.String()+".tar")
	// ctr's export through the transfer service has been seen (once in many CI runs) to exit 0
	// with an archive whose 385-byte config blob had no data, which the import then refused
	// ("short read: expected 385 bytes but got 0"). That is containerd's export, not what this
	// test checks, so every blob of the archive is checked against its digest first, and a bad
	// archive is exported again (at most twice more), saying so.
	for attempt := 1; ; attempt++ {
		if _, stderr, err := d.ctr(ns, "images", "export", archive, name); err != nil {
			t.Fatalf("ctr images export: %v\n%s", err, stderr)
		}
		bad := badArchiveBlob(archive)
		if bad == nil {
			break
		}
		if attempt == 3 {
			t.Fatalf("ctr images export wrote a bad archive %d times, the last: %v", attempt, bad)
		}
		t.Logf("ctr images export wrote a bad archive (%v); exporting again", bad)
	}
	exported := &testImage{name: name, archive: archive, layers: append(append([]blob{}, img.layers...), blob{diffID: diffIDs["default"]})}
	stockTree := importImage(t, env.stock, "committed-"+d.kind.String(), exported, sn, false)
	sameTree(t, fmt.Sprintf("%s's committed container vs its export imported into stock", d.kind), view(t, d, ns, sn, committed), stockTree)
}

// badArchiveBlob reads an image archive whole and returns what is wrong with it: a tar that
// does not read to its end, or a blobs/sha256/<hex> entry whose content has another digest.
func badArchiveBlob(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		hex, ok := strings.CutPrefix(h.Name, "blobs/sha256/")
		if !ok || h.Typeflag != tar.TypeReg {
			continue
		}
		digester := digest.SHA256.Digester()
		n, err := io.Copy(digester.Hash(), tr)
		if err != nil {
			return fmt.Errorf("%s: %s: %w", path, h.Name, err)
		}
		if got := digester.Digest().Encoded(); got != hex {
			return fmt.Errorf("%s: %s: %d of %d bytes, digest %s", path, h.Name, n, h.Size, got)
		}
	}
}

// uncompressed returns the diffID of a stored layer (its uncompressed label, or its own
// digest when uncompressed) and its labels.
func uncompressed(t *testing.T, d *daemon, ctx context.Context, desc ocispec.Descriptor) (digest.Digest, map[string]string) {
	t.Helper()
	info, err := d.client.ContentStore().Info(ctx, desc.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if desc.MediaType == ocispec.MediaTypeImageLayer {
		return desc.Digest, info.Labels
	}
	return digest.Digest(info.Labels[labels.LabelUncompressed]), info.Labels
}

// createImage stores a config and a manifest of img's layers plus layer, and names it.
func createImage(ctx context.Context, d *daemon, name string, img *testImage, layer ocispec.Descriptor, diffID digest.Digest) error {
	config, err := json.Marshal(ocispec.Image{
		Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: append(img.diffIDs(), diffID)},
	})
	if err != nil {
		return err
	}
	cs := d.client.ContentStore()
	configDesc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(config), Size: int64(len(config))}
	if err := content.WriteBlob(ctx, cs, "e2e-config", bytes.NewReader(config), configDesc); err != nil {
		return err
	}
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: configDesc}
	m.SchemaVersion = 2
	gcLabels := map[string]string{"containerd.io/gc.ref.content.config": configDesc.Digest.String()}
	for i, l := range img.layers {
		m.Layers = append(m.Layers, ocispec.Descriptor{MediaType: l.mediaType, Digest: l.digest, Size: l.size})
		gcLabels[fmt.Sprintf("containerd.io/gc.ref.content.l.%d", i)] = l.digest.String()
	}
	m.Layers = append(m.Layers, layer)
	gcLabels[fmt.Sprintf("containerd.io/gc.ref.content.l.%d", len(img.layers))] = layer.Digest.String()
	manifest, err := json.Marshal(m)
	if err != nil {
		return err
	}
	manifestDesc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(manifest), Size: int64(len(manifest))}
	if err := content.WriteBlob(ctx, cs, "e2e-manifest", bytes.NewReader(manifest), manifestDesc, content.WithLabels(gcLabels)); err != nil {
		return err
	}
	_, err = d.client.ImageService().Create(ctx, images.Image{Name: name, Target: manifestDesc})
	return err
}
