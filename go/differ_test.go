package layerdiff

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/diff"
	"github.com/containerd/containerd/v2/core/diff/apply"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/pkg/archive/compression"
	"github.com/containerd/containerd/v2/pkg/epoch"
	"github.com/containerd/containerd/v2/pkg/labels"
	"github.com/containerd/containerd/v2/plugins/diff/walking"
	"github.com/containerd/errdefs"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/layerdiff/layerdiff/go/internal/randtree"
	"github.com/layerdiff/layerdiff/go/internal/testkit"
	"github.com/layerdiff/layerdiff/go/internal/treecmp"
)

var layerMediaTypes = []string{
	ocispec.MediaTypeImageLayer,
	ocispec.MediaTypeImageLayerGzip,
	ocispec.MediaTypeImageLayerZstd,
}

// pairDirs makes lower and upper trees for a seed: hand-written changes (fixedPair).
func pairDirs(t testing.TB, seed int) (lower, upper string) {
	t.Helper()
	lower, upper = t.TempDir(), t.TempDir()
	fixedPair(t, lower, upper, seed)
	return lower, upper
}

// treePair is one lower/upper input of the parity tests.
type treePair struct {
	name         string
	lower, upper string
}

// parityPairs are the parity tests' inputs: the hand-written pairs, and seeded random pairs
// from randtree (which hits every change rule: devices, hardlinks, capabilities, nanosecond
// and whole-second mtimes, long and non-ASCII names, type replacements).
func parityPairs(t *testing.T) []treePair {
	t.Helper()
	var pairs []treePair
	for seed := 0; seed < 3; seed++ {
		lower, upper := pairDirs(t, seed)
		pairs = append(pairs, treePair{fmt.Sprintf("fixed%d", seed), lower, upper})
	}
	for seed := int64(1); seed <= 6; seed++ {
		lower, upper := t.TempDir(), t.TempDir()
		opts := randtree.DefaultOptions
		if seed > 4 {
			opts = randtree.Options{Entries: 400, MaxFileSize: 256 << 10, Changes: 200}
		}
		if err := randtree.GenerateWith(seed, lower, upper, opts); err != nil {
			t.Fatalf("randtree seed %d: %v", seed, err)
		}
		pairs = append(pairs, treePair{fmt.Sprintf("random%d", seed), lower, upper})
	}
	return pairs
}

// uncompressed returns a blob's bytes after decompression (gzip/zstd detected).
func uncompressed(t testing.TB, ctx context.Context, cs content.Store, desc ocispec.Descriptor) []byte {
	t.Helper()
	rc, err := compression.DecompressStream(bytes.NewReader(readBlob(t, ctx, cs, desc)))
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func blobLabels(t testing.TB, ctx context.Context, cs content.Store, dgst digest.Digest) map[string]string {
	t.Helper()
	info, err := cs.Info(ctx, dgst)
	if err != nil {
		t.Fatal(err)
	}
	return info.Labels
}

// TestCompareMatchesWalking: same trees, same options → the same layer as the walking
// differ: media type, uncompressed bytes (so diffID), label, and for tar the same blob.
func TestCompareMatchesWalking(t *testing.T) {
	testkit.RequireRoot(t, needsRoot)
	for _, pair := range parityPairs(t) {
		lower, upper := pair.lower, pair.upper
		for _, mt := range append(layerMediaTypes, "") {
			t.Run(pair.name+"/"+filepath.Base(mt), func(t *testing.T) {
				ctxA, ours := testkit.ContentStore(t)
				ctxB, theirs := testkit.ContentStore(t)
				var opts []diff.Opt
				if mt != "" {
					opts = append(opts, diff.WithMediaType(mt))
				}
				got, err := NewDiffer(ours).Compare(ctxA, bindMount(lower, true), bindMount(upper, true), opts...)
				if err != nil {
					t.Fatalf("layerdiff Compare: %v", err)
				}
				want, err := walking.NewWalkingDiff(theirs).Compare(ctxB, bindMount(lower, true), bindMount(upper, true), opts...)
				if err != nil {
					t.Fatalf("walking Compare: %v", err)
				}
				if got.MediaType != want.MediaType {
					t.Errorf("media type %q, containerd %q", got.MediaType, want.MediaType)
				}
				gotTar, wantTar := uncompressed(t, ctxA, ours, got), uncompressed(t, ctxB, theirs, want)
				if !bytes.Equal(gotTar, wantTar) {
					t.Fatalf("uncompressed layers differ: %d bytes (%s) vs containerd %d bytes (%s)",
						len(gotTar), digest.FromBytes(gotTar), len(wantTar), digest.FromBytes(wantTar))
				}
				gotLabels, wantLabels := blobLabels(t, ctxA, ours, got.Digest), blobLabels(t, ctxB, theirs, want.Digest)
				if gotLabels[labels.LabelUncompressed] != wantLabels[labels.LabelUncompressed] {
					t.Errorf("label %q, containerd %q", gotLabels[labels.LabelUncompressed], wantLabels[labels.LabelUncompressed])
				}
				if mt == ocispec.MediaTypeImageLayer {
					if got.Digest != want.Digest || got.Size != want.Size {
						t.Errorf("tar blob %s/%d, containerd %s/%d", got.Digest, got.Size, want.Digest, want.Size)
					}
				} else if gotLabels[labels.LabelUncompressed] != digest.FromBytes(gotTar).String() {
					t.Errorf("label %q is not the digest of the uncompressed blob %s", gotLabels[labels.LabelUncompressed], digest.FromBytes(gotTar))
				}
			})
		}
	}
}

// TestCompareStoreOptions: reference, custom labels, an existing blob (committed twice,
// label restored when missing), with the walking differ as the oracle for each step.
func TestCompareStoreOptions(t *testing.T) {
	testkit.RequireRoot(t, needsRoot)
	lower, upper := pairDirs(t, 1)
	for _, mt := range layerMediaTypes {
		t.Run(filepath.Base(mt), func(t *testing.T) {
			for name, comparer := range map[string]func(content.Store) diff.Comparer{
				"layerdiff":  func(cs content.Store) diff.Comparer { return NewDiffer(cs) },
				"containerd": walking.NewWalkingDiff,
			} {
				ctx, cs := testkit.ContentStore(t)
				c := comparer(cs)
				opts := []diff.Opt{diff.WithMediaType(mt), diff.WithReference("my-ref"), diff.WithLabels(map[string]string{"custom": "yes"})}
				first, err := c.Compare(ctx, bindMount(lower, true), bindMount(upper, true), opts...)
				if err != nil {
					t.Fatalf("%s: first compare: %v", name, err)
				}
				if got := blobLabels(t, ctx, cs, first.Digest)["custom"]; got != "yes" {
					t.Errorf("%s: custom label %q", name, got)
				}
				// Drop the uncompressed label; a second compare of the same blob restores it.
				info, err := cs.Info(ctx, first.Digest)
				if err != nil {
					t.Fatal(err)
				}
				wantLabel := info.Labels[labels.LabelUncompressed]
				info.Labels = map[string]string{"custom": "yes"}
				if _, err := cs.Update(ctx, info, "labels"); err != nil {
					t.Fatal(err)
				}
				second, err := c.Compare(ctx, bindMount(lower, true), bindMount(upper, true), diff.WithMediaType(mt), diff.WithReference("my-ref"))
				if err != nil {
					t.Fatalf("%s: second compare (existing blob): %v", name, err)
				}
				if mt == ocispec.MediaTypeImageLayer && second.Digest != first.Digest {
					// tar is deterministic; compressed encoders are too, but that is not promised.
					t.Errorf("%s: second compare gave %s, first %s", name, second.Digest, first.Digest)
				}
				if got := blobLabels(t, ctx, cs, second.Digest)[labels.LabelUncompressed]; got != wantLabel {
					t.Errorf("%s: label after recompare %q, want %q", name, got, wantLabel)
				}
				// No upload is left behind under the reference.
				if _, err := cs.Status(ctx, "my-ref"); !errdefs.IsNotFound(err) {
					t.Errorf("%s: status of my-ref after commit: %v", name, err)
				}
			}
		})
	}
}

// TestCompareCustomCompressor: tar from the core, compression by the caller's compressor;
// the same Go gzip on the same tar gives the very same blob as containerd's.
func TestCompareCustomCompressor(t *testing.T) {
	testkit.RequireRoot(t, needsRoot)
	lower, upper := pairDirs(t, 2)
	compressor := func(dest io.Writer, mediaType string) (io.WriteCloser, error) {
		if mediaType != ocispec.MediaTypeImageLayerGzip {
			return nil, fmt.Errorf("unexpected media type %q", mediaType)
		}
		return gzip.NewWriterLevel(dest, gzip.BestSpeed)
	}
	ctxA, ours := testkit.ContentStore(t)
	ctxB, theirs := testkit.ContentStore(t)
	opts := []diff.Opt{diff.WithCompressor(compressor), diff.WithMediaType(ocispec.MediaTypeImageLayerGzip)}
	got, err := NewDiffer(ours).Compare(ctxA, bindMount(lower, true), bindMount(upper, true), opts...)
	if err != nil {
		t.Fatal(err)
	}
	want, err := walking.NewWalkingDiff(theirs).Compare(ctxB, bindMount(lower, true), bindMount(upper, true), opts...)
	if err != nil {
		t.Fatal(err)
	}
	if !sameDesc(got, want) {
		t.Errorf("descriptor %+v, containerd %+v", got, want)
	}
	if a, b := blobLabels(t, ctxA, ours, got.Digest), blobLabels(t, ctxB, theirs, want.Digest); a[labels.LabelUncompressed] != b[labels.LabelUncompressed] {
		t.Errorf("labels %v, containerd %v", a, b)
	}
	// Without a media type a custom compressor is refused, as by containerd.
	_, err = NewDiffer(ours).Compare(ctxA, bindMount(lower, true), bindMount(upper, true), diff.WithCompressor(compressor))
	if err == nil {
		t.Error("custom compressor without media type accepted")
	}
}

// TestCompareSourceDateEpoch: the epoch from the option and from the context, against
// containerd on a tar layer (whose blob must then be identical).
func TestCompareSourceDateEpoch(t *testing.T) {
	testkit.RequireRoot(t, needsRoot)
	lower, upper := pairDirs(t, 0)
	tm := time.Unix(1_700_000_050, 0)
	for name, setup := range map[string]func(context.Context) (context.Context, []diff.Opt){
		"option": func(ctx context.Context) (context.Context, []diff.Opt) {
			return ctx, []diff.Opt{diff.WithSourceDateEpoch(&tm)}
		},
		"context": func(ctx context.Context) (context.Context, []diff.Opt) {
			return epoch.WithSourceDateEpoch(ctx, &tm), nil
		},
	} {
		t.Run(name, func(t *testing.T) {
			ctxA, ours := testkit.ContentStore(t)
			ctxB, theirs := testkit.ContentStore(t)
			ctxA, opts := setup(ctxA)
			ctxB, _ = setup(ctxB)
			opts = append(opts, diff.WithMediaType(ocispec.MediaTypeImageLayer))
			got, err := NewDiffer(ours).Compare(ctxA, bindMount(lower, true), bindMount(upper, true), opts...)
			if err != nil {
				t.Fatal(err)
			}
			want, err := walking.NewWalkingDiff(theirs).Compare(ctxB, bindMount(lower, true), bindMount(upper, true), opts...)
			if err != nil {
				t.Fatal(err)
			}
			plain, err := NewDiffer(ours).Compare(context.WithoutCancel(ctxA), bindMount(lower, true), bindMount(upper, true), diff.WithMediaType(ocispec.MediaTypeImageLayer))
			if err != nil {
				t.Fatal(err)
			}
			if !sameDesc(got, want) {
				t.Errorf("descriptor %+v, containerd %+v", got, want)
			}
			if name == "option" && plain.Digest == got.Digest {
				t.Error("the epoch changed nothing: the test trees have no mtime after it")
			}
		})
	}
}

// TestUnknownMediaTypes: both directions answer NotImplemented, so that containerd's diff
// service falls through to its next differ.
func TestUnknownMediaTypes(t *testing.T) {
	testkit.RequireRoot(t, needsRoot)
	ctx, cs := testkit.ContentStore(t)
	d := NewDiffer(cs)
	lower, upper := t.TempDir(), t.TempDir()
	_, err := d.Compare(ctx, bindMount(lower, true), bindMount(upper, true), diff.WithMediaType("application/vnd.example.layer.v1.squashfs"))
	if !errdefs.IsNotImplemented(err) {
		t.Errorf("Compare unknown media type: %v, want NotImplemented", err)
	}
	desc := writeBlob(t, ctx, cs, "application/vnd.example.layer.v1.squashfs", []byte("not a tar"))
	_, err = d.Apply(ctx, desc, bindMount(t.TempDir(), false))
	if !errdefs.IsNotImplemented(err) {
		t.Errorf("Apply unknown media type: %v, want NotImplemented", err)
	}
}

func writeBlob(t testing.TB, ctx context.Context, cs content.Store, mediaType string, data []byte) ocispec.Descriptor {
	t.Helper()
	desc := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))}
	if err := content.WriteBlob(ctx, cs, "blob-"+desc.Digest.Encoded(), bytes.NewReader(data), desc); err != nil {
		t.Fatal(err)
	}
	return desc
}

// containerdLayer makes a layer with containerd's walking differ, in the given store.
func containerdLayer(t testing.TB, ctx context.Context, cs content.Store, lower, upper, mediaType string) ocispec.Descriptor {
	t.Helper()
	desc, err := walking.NewWalkingDiff(cs).Compare(ctx, bindMount(lower, true), bindMount(upper, true), diff.WithMediaType(mediaType))
	if err != nil {
		t.Fatalf("walking Compare: %v", err)
	}
	return desc
}

// TestApplyMatchesFsApplier: containerd's layers applied by both appliers onto copies of
// the lower tree (remove-mode whiteouts, bind mounts): same descriptor, same tree, and that
// tree is the upper tree.
func TestApplyMatchesFsApplier(t *testing.T) {
	testkit.RequireRoot(t, needsRoot)
	for _, pair := range parityPairs(t) {
		lower, upper := pair.lower, pair.upper
		for _, mt := range layerMediaTypes {
			t.Run(pair.name+"/"+filepath.Base(mt), func(t *testing.T) {
				ctx, cs := testkit.ContentStore(t)
				layer := containerdLayer(t, ctx, cs, lower, upper, mt)
				ourRoot := applyBoth(t, ctx, cs, layer, lower, diff.WithSyncFs(true))
				// Random trees hold what a layer cannot carry (sockets, pre-1970 times),
				// so only the hand-written ones must come out as upper itself.
				if strings.HasPrefix(pair.name, "fixed") {
					requireSameTreeAs(t, upper, ourRoot, true)
				}
			})
		}
	}
}

// TestApplyOverlayShortcut: a single overlay mount is applied into its upperdir with
// overlay whiteouts and the lowerdirs as parents, exactly as containerd does; the merged
// overlay view is then the upper tree.
func TestApplyOverlayShortcut(t *testing.T) {
	testkit.RequireRoot(t, needsRoot)
	lower, upper := pairDirs(t, 1)
	for _, mt := range []string{ocispec.MediaTypeImageLayerGzip, ocispec.MediaTypeImageLayerZstd} {
		t.Run(filepath.Base(mt), func(t *testing.T) {
			ctx, cs := testkit.ContentStore(t)
			layer := containerdLayer(t, ctx, cs, lower, upper, mt)
			ourUpper, theirUpper := t.TempDir(), t.TempDir()
			got, err := NewDiffer(cs).Apply(ctx, layer, overlayMount(ourUpper, t.TempDir(), lower), diff.WithSyncFs(true))
			if err != nil {
				t.Fatalf("layerdiff Apply: %v", err)
			}
			want, err := apply.NewFileSystemApplier(cs).Apply(ctx, layer, overlayMount(theirUpper, t.TempDir(), lower), diff.WithSyncFs(true))
			if err != nil {
				t.Fatalf("containerd Apply: %v", err)
			}
			if !sameDesc(got, want) {
				t.Errorf("descriptor %+v, containerd %+v", got, want)
			}
			requireSameTree(t, theirUpper, ourUpper)
			// Whiteouts really are overlay whiteouts: the merged view equals upper.
			err = mount.WithReadonlyTempMount(ctx, overlayMount(ourUpper, t.TempDir(), lower), func(merged string) error {
				requireSameTreeAs(t, upper, merged, true)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			// Compare with that overlay as the upper mount (read-only temp overlay mount):
			// the same layer as containerd's walking differ gives.
			overlayUpper := overlayMount(ourUpper, t.TempDir(), lower)
			got, err = NewDiffer(cs).Compare(ctx, bindMount(lower, true), overlayUpper, diff.WithMediaType(ocispec.MediaTypeImageLayer))
			if err != nil {
				t.Fatalf("layerdiff Compare of the overlay: %v", err)
			}
			want, err = walking.NewWalkingDiff(cs).Compare(ctx, bindMount(lower, true), overlayUpper, diff.WithMediaType(ocispec.MediaTypeImageLayer))
			if err != nil {
				t.Fatalf("walking Compare of the overlay: %v", err)
			}
			if !sameDesc(got, want) {
				t.Errorf("overlay compare %+v, containerd %+v", got, want)
			}
		})
	}
}

// TestApplyOtherLayerMediaTypes: Docker's layer media types (whose "tar" is sniffed for
// compression, unlike OCI's) and a gzip blob declared as Docker tar, against containerd.
func TestApplyOtherLayerMediaTypes(t *testing.T) {
	testkit.RequireRoot(t, needsRoot)
	lower, upper := pairDirs(t, 2)
	ctx, cs := testkit.ContentStore(t)
	gz := containerdLayer(t, ctx, cs, lower, upper, ocispec.MediaTypeImageLayerGzip)
	for _, mt := range []string{
		images.MediaTypeDockerSchema2LayerGzip,
		images.MediaTypeDockerSchema2Layer, // gzip content under a tar type: containerd sniffs it
		images.MediaTypeDockerSchema2LayerForeignGzip,
		ocispec.MediaTypeImageLayerNonDistributableGzip, //nolint:staticcheck // deprecated but accepted
	} {
		t.Run(mt, func(t *testing.T) {
			layer := gz
			layer.MediaType = mt
			applyBoth(t, ctx, cs, layer, lower)
		})
	}
}

// TestApplyOverlayParents: a layer without entries for its parent directories, applied into
// an overlay upperdir: the missing parents take their attributes from the first lowerdir
// that has them (top first), as in containerd; plus an opaque directory marker.
func TestApplyOverlayParents(t *testing.T) {
	testkit.RequireRoot(t, needsRoot)
	top, bottom := t.TempDir(), t.TempDir()
	tw := treeWriter{t, bottom}
	tw.dir("a/b", 0o750)
	tw.chown("a", 11, 12)
	tw.chown("a/b", 13, 14)
	tw.xattr("a/b", "user.origin", []byte("bottom"))
	tw.times("a/b", fixedTime(5, 0))
	tw.times("a", fixedTime(6, 0))
	tw.file("o/old", []byte("hidden by the opaque marker"), 0o644)
	tt := treeWriter{t, top}
	tt.dir("a", 0o711) // the top lowerdir wins for "a"
	tt.chown("a", 21, 22)
	tt.times("a", fixedTime(7, 0))

	layerTar := tarOf(t,
		&tar.Header{Name: "a/b/c/file", Typeflag: tar.TypeReg, Mode: 0o640, Uid: 1, Gid: 2, ModTime: fixedTime(8, 0)},
		&tar.Header{Name: "o/.wh..wh..opq", Typeflag: tar.TypeReg},
		&tar.Header{Name: "o/new", Typeflag: tar.TypeReg, Mode: 0o600, ModTime: fixedTime(9, 0)},
	)
	ctx, cs := testkit.ContentStore(t)
	layer := writeBlob(t, ctx, cs, ocispec.MediaTypeImageLayer, layerTar)
	ourUpper, theirUpper := t.TempDir(), t.TempDir()
	got, err := NewDiffer(cs).Apply(ctx, layer, overlayMount(ourUpper, t.TempDir(), top, bottom))
	if err != nil {
		t.Fatalf("layerdiff Apply: %v", err)
	}
	want, err := apply.NewFileSystemApplier(cs).Apply(ctx, layer, overlayMount(theirUpper, t.TempDir(), top, bottom))
	if err != nil {
		t.Fatalf("containerd Apply: %v", err)
	}
	if !sameDesc(got, want) {
		t.Errorf("descriptor %+v, containerd %+v", got, want)
	}
	requireSameTreeButDirTimes(t, theirUpper, ourUpper)
	// The file's own directory chain is new; "a" and "a/b" copy the lowers' owners and modes.
	snap, err := treecmp.Snapshot(ourUpper)
	if err != nil {
		t.Fatal(err)
	}
	if a := snap.Entries["a"]; a == nil || a.UID != 21 || a.Perm != 0o711 {
		t.Errorf("a: %+v, want the top lowerdir's owner 21 and mode 0711", a)
	}
	if b := snap.Entries["a/b"]; b == nil || b.UID != 13 || b.Perm != 0o750 {
		t.Errorf("a/b: %+v, want the bottom lowerdir's owner 13 and mode 0750", b)
	}
}

// fakeMountManager activates any mount set as a bind mount of one directory and records
// what it was asked, like containerd's mount manager does for multi-mount sets.
type fakeMountManager struct {
	mount.Manager // methods the applier must not call panic via the nil interface
	target        string
	activated     []string
	deactivated   []string
}

func (m *fakeMountManager) Activate(_ context.Context, id string, mounts []mount.Mount, _ ...mount.ActivateOpt) (mount.ActivationInfo, error) {
	m.activated = append(m.activated, id)
	return mount.ActivationInfo{Name: id, System: bindMount(m.target, false)}, nil
}

func (m *fakeMountManager) Deactivate(_ context.Context, id string) error {
	m.deactivated = append(m.deactivated, id)
	return nil
}

// TestApplyWithMountManager: a multi-mount set goes through the mount manager (activated,
// applied onto its system mount, deactivated), as in containerd's fs applier.
func TestApplyWithMountManager(t *testing.T) {
	testkit.RequireRoot(t, needsRoot)
	lower, upper := pairDirs(t, 0)
	ctx, cs := testkit.ContentStore(t)
	layer := containerdLayer(t, ctx, cs, lower, upper, ocispec.MediaTypeImageLayerGzip)
	target := t.TempDir()
	testkit.CopyTree(t, lower, target)
	mm := &fakeMountManager{target: target}
	twoMounts := []mount.Mount{{Type: "format/test", Source: "a"}, {Type: "format/test", Source: "b"}}
	if _, err := NewDiffer(cs, WithMountManager(mm)).Apply(ctx, layer, twoMounts); err != nil {
		t.Fatal(err)
	}
	if len(mm.activated) != 1 || len(mm.deactivated) != 1 || mm.activated[0] != mm.deactivated[0] {
		t.Errorf("activated %v, deactivated %v: want one activation, undone", mm.activated, mm.deactivated)
	}
	requireSameTreeAs(t, upper, target, true)
}
