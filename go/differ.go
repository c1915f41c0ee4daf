package layerdiff

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/diff"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/pkg/epoch"
	"github.com/containerd/containerd/v2/pkg/labels"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Differ implements containerd's diff.Comparer and diff.Applier with the layerdiff core,
// behaving like the walking differ (plugins/diff/walking) and the fs applier
// (core/diff/apply) in every option.
type Differ struct {
	store        content.Store
	mountManager mount.Manager
	noUpperdir   bool // WithUpperdirCompare(false)
	// unpackThreads is ApplyOptions.UnpackThreads of every Apply (WithUnpackThreads).
	unpackThreads uint32
}

var (
	_ diff.Comparer = (*Differ)(nil)
	_ diff.Applier  = (*Differ)(nil)
)

// DifferOpt configures a [Differ].
type DifferOpt func(*Differ)

// WithMountManager makes Apply activate multi-mount sets through mm, as containerd's fs
// applier does; nil is allowed (no manager).
func WithMountManager(mm mount.Manager) DifferOpt {
	return func(d *Differ) { d.mountManager = mm }
}

// NewDiffer returns a Differ that writes compared layers to store and reads applied ones
// from it.
func NewDiffer(store content.Store, opts ...DifferOpt) *Differ {
	d := &Differ{store: store}
	for _, o := range opts {
		o(d)
	}
	return d
}

var emptyDesc = ocispec.Descriptor{}

// Compare diffs the lower and upper mounts and stores the layer in the content store,
// returning its descriptor (as walking.Compare does).
func (d *Differ) Compare(ctx context.Context, lower, upper []mount.Mount, opts ...diff.Opt) (created ocispec.Descriptor, err error) {
	t1 := time.Now()
	defer func() {
		if err == nil {
			logDone(ctx, t1, created, "diff created (layerdiff)")
		}
	}()
	var config diff.Config
	for _, opt := range opts {
		if err := opt(&config); err != nil {
			return emptyDesc, err
		}
	}
	if tm := epoch.FromContext(ctx); tm != nil && config.SourceDateEpoch == nil {
		config.SourceDateEpoch = tm
	}

	// The core compresses gzip and zstd itself; a custom compressor gets the core's tar.
	coreCompression := CompressionNone
	compressed := false
	if config.Compressor != nil {
		if config.MediaType == "" {
			return emptyDesc, errors.New("media type must be explicitly specified when using custom compressor")
		}
		compressed = true
	} else {
		if config.MediaType == "" {
			config.MediaType = ocispec.MediaTypeImageLayerGzip
		}
		switch config.MediaType {
		case ocispec.MediaTypeImageLayer:
		case ocispec.MediaTypeImageLayerGzip:
			coreCompression, compressed = CompressionGzip, true
		case ocispec.MediaTypeImageLayerZstd:
			coreCompression, compressed = CompressionZstd, true
		default:
			return emptyDesc, fmt.Errorf("unsupported diff media type: %v: %w", config.MediaType, errdefs.ErrNotImplemented)
		}
	}
	idMaps, lower, upper, err := compareIDMaps(lower, upper, &config.Labels)
	if err != nil {
		return emptyDesc, err
	}
	compareOpts := CompareOptions{Compression: coreCompression, SourceDateEpoch: config.SourceDateEpoch, IDMaps: idMaps}

	if desc, ok, err := d.compareUpperdir(ctx, lower, upper, &config, compressed, compareOpts); ok || err != nil {
		return desc, err
	}

	var ocidesc ocispec.Descriptor
	if err := mount.WithTempMount(ctx, lower, func(lowerRoot string) error {
		return mount.WithReadonlyTempMount(ctx, upper, func(upperRoot string) error {
			desc, err := d.writeDiff(ctx, &config, compressed, func(w io.Writer) (CompareResult, error) {
				return Compare(ctx, lowerRoot, upperRoot, w, compareOpts)
			})
			ocidesc = desc
			return err
		})
	}); err != nil {
		return emptyDesc, err
	}
	return ocidesc, nil
}

// compareUpperdir is the fast path on overlayfs snapshotter mounts: it mounts only the lower
// view (read-only) and reads the upper's upperdir directly, never remounting the active
// upper. ok is false, with no error, when the double walk must be done instead (the mounts
// are not recognised, or the upperdir is not representable); the reason is logged at debug
// level.
func (d *Differ) compareUpperdir(ctx context.Context, lower, upper []mount.Mount, config *diff.Config, compressed bool, compareOpts CompareOptions) (_ ocispec.Descriptor, ok bool, _ error) {
	fallBack := func(reason string) (ocispec.Descriptor, bool, error) {
		log.G(ctx).WithField("reason", reason).Debug("layerdiff: upperdir compare not used, walking both trees")
		if upperdirCompareHook != nil {
			upperdirCompareHook(false, reason)
		}
		return emptyDesc, false, nil
	}
	if d.noUpperdir || upperdirDisabledByEnv() {
		return fallBack("turned off")
	}
	overlay, err := recogniseOverlayUpper(lower, upper)
	if err != nil {
		return fallBack(err.Error())
	}
	// writeDiff picks a fresh reference when there is none; a fallback must pick its own.
	reference := config.Reference
	var desc ocispec.Descriptor
	err = mount.WithReadonlyTempMount(ctx, lower, func(lowerRoot string) error {
		desc, err = d.writeDiff(ctx, config, compressed, func(w io.Writer) (CompareResult, error) {
			return CompareUpperdir(ctx, lowerRoot, overlay.upperdir, overlay.xattrs, w, compareOpts)
		})
		return err
	})
	var coreErr *Error
	if errors.As(err, &coreErr) && coreErr.Op == "compare upperdir" && coreErr.Kind == KindNotImplemented {
		config.Reference = reference
		return fallBack(coreErr.Message)
	}
	if err != nil {
		return emptyDesc, false, err
	}
	log.G(ctx).WithField("upperdir", overlay.upperdir).Debug("layerdiff: compared by reading the upperdir")
	if upperdirCompareHook != nil {
		upperdirCompareHook(true, "")
	}
	return desc, true, nil
}

// writeDiff runs the core into a content writer and commits the blob with its labels.
func (d *Differ) writeDiff(ctx context.Context, config *diff.Config, compressed bool, compare func(io.Writer) (CompareResult, error)) (_ ocispec.Descriptor, err error) {
	newReference := false
	if config.Reference == "" {
		newReference = true
		config.Reference = uniqueRef()
	}
	cw, err := d.store.Writer(ctx,
		content.WithRef(config.Reference),
		content.WithDescriptor(ocispec.Descriptor{MediaType: config.MediaType}))
	if err != nil {
		return emptyDesc, fmt.Errorf("failed to open writer: %w", err)
	}
	// Until the writer is committed, any failure closes it and drops a fresh upload.
	committed := false
	defer func() {
		if !committed {
			cw.Close()
			if newReference {
				if abortErr := d.store.Abort(ctx, config.Reference); abortErr != nil {
					log.G(ctx).WithError(abortErr).WithField("ref", config.Reference).Warnf("failed to delete diff upload")
				}
			}
		}
	}()
	if !newReference {
		if err := cw.Truncate(0); err != nil {
			return emptyDesc, err
		}
	}

	var res CompareResult
	if config.Compressor != nil {
		stream, err := config.Compressor(cw, config.MediaType)
		if err != nil {
			return emptyDesc, fmt.Errorf("failed to get compressed stream: %w", err)
		}
		res, err = compare(stream)
		if closeErr := stream.Close(); err == nil && closeErr != nil {
			err = fmt.Errorf("failed to close compressed stream: %w", closeErr)
		}
		if err != nil {
			return emptyDesc, fmt.Errorf("failed to write compressed diff: %w", err)
		}
	} else {
		res, err = compare(cw)
		if err != nil {
			return emptyDesc, fmt.Errorf("failed to write diff: %w", err)
		}
		// The store hashed what it received; the core hashed what it sent.
		if got := cw.Digest(); got != res.Digest {
			return emptyDesc, fmt.Errorf("content writer digest %s differs from the layer's %s: %w", got, res.Digest, errdefs.ErrDataLoss)
		}
	}
	if compressed {
		if config.Labels == nil {
			config.Labels = map[string]string{}
		}
		config.Labels[labels.LabelUncompressed] = res.DiffID.String()
	}

	var commitOpts []content.Opt
	if config.Labels != nil {
		commitOpts = append(commitOpts, content.WithLabels(config.Labels))
	}
	dgst := cw.Digest()
	if err := cw.Commit(ctx, 0, dgst, commitOpts...); err != nil {
		if !errdefs.IsAlreadyExists(err) {
			return emptyDesc, fmt.Errorf("failed to commit: %w", err)
		}
	}
	committed = true

	info, err := d.store.Info(ctx, dgst)
	if err != nil {
		return emptyDesc, fmt.Errorf("failed to get info from content store: %w", err)
	}
	if info.Labels == nil {
		info.Labels = make(map[string]string)
	}
	// A blob that already existed without the label gets it (the walking differ does this
	// even for uncompressed layers, where the value is then empty).
	if _, ok := info.Labels[labels.LabelUncompressed]; !ok {
		info.Labels[labels.LabelUncompressed] = config.Labels[labels.LabelUncompressed]
		if _, err := d.store.Update(ctx, info, "labels."+labels.LabelUncompressed); err != nil {
			return emptyDesc, fmt.Errorf("error setting uncompressed label: %w", err)
		}
	}
	return ocispec.Descriptor{
		MediaType: config.MediaType,
		Size:      info.Size,
		Digest:    info.Digest,
	}, nil
}

// logDone says at debug level what was done and how long it took, with the fields of
// containerd's applier's "diff applied" line.
func logDone(ctx context.Context, t1 time.Time, desc ocispec.Descriptor, msg string) {
	log.G(ctx).WithFields(log.Fields{
		"d":      time.Since(t1),
		"digest": desc.Digest,
		"size":   desc.Size,
		"media":  desc.MediaType,
	}).Debug(msg)
}

func uniqueRef() string {
	t := time.Now()
	var b [3]byte
	// A failed read only makes the reference less unique.
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("layerdiff-%d-%s", t.UnixNano(), base64.URLEncoding.EncodeToString(b[:]))
}
