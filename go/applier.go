package layerdiff

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/diff"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"
)

// coreMediaTypes are the layer media types the core reads itself: true = compression is
// detected from the bytes (containerd's DecompressStream), false = plain tar, which
// containerd never sniffs. Everything else goes through containerd's stream processors in Go.
var coreMediaTypes = map[string]bool{
	ocispec.MediaTypeImageLayer:                     false,
	ocispec.MediaTypeImageLayerNonDistributable:     false, //nolint:staticcheck // deprecated, still accepted by containerd
	ocispec.MediaTypeImageLayerGzip:                 true,
	ocispec.MediaTypeImageLayerZstd:                 true,
	ocispec.MediaTypeImageLayerNonDistributableGzip: true, //nolint:staticcheck // as above
	ocispec.MediaTypeImageLayerNonDistributableZstd: true, //nolint:staticcheck // as above
	images.MediaTypeDockerSchema2Layer:              true,
	images.MediaTypeDockerSchema2LayerGzip:          true,
	images.MediaTypeDockerSchema2LayerZstd:          true,
	images.MediaTypeDockerSchema2LayerForeign:       true,
	images.MediaTypeDockerSchema2LayerForeignGzip:   true,
}

// Apply applies the layer desc (read from the content store) onto mounts and returns the
// descriptor of the uncompressed stream (as containerd's fs applier does).
func (d *Differ) Apply(ctx context.Context, desc ocispec.Descriptor, mounts []mount.Mount, opts ...diff.ApplyOpt) (_ ocispec.Descriptor, err error) {
	t1 := time.Now()
	defer func() {
		if err == nil {
			logDone(ctx, t1, desc, "diff applied (layerdiff)")
		}
	}()

	var config diff.ApplyConfig
	for _, o := range opts {
		if err := o(ctx, desc, &config); err != nil {
			return emptyDesc, fmt.Errorf("failed to apply config opt: %w", err)
		}
	}

	ra, err := d.store.ReaderAt(ctx, desc)
	if err != nil {
		return emptyDesc, fmt.Errorf("failed to get reader from content store: %w", err)
	}
	var r io.ReadCloser
	if config.Progress != nil {
		r = newProgressReader(ra, config.Progress)
	} else {
		r = &readCloser{Reader: content.NewReader(ra), Closer: ra}
	}
	defer r.Close()

	// Media types the core cannot read go through the registered stream processors (in Go)
	// until they become one it can.
	var processors []diff.StreamProcessor
	var stream diff.StreamProcessor = diff.NewProcessorChain(desc.MediaType, r)
	for {
		if _, ok := coreMediaTypes[stream.MediaType()]; ok {
			break
		}
		next, err := diff.GetProcessor(ctx, stream, config.ProcessorPayloads)
		if err != nil {
			if errors.Is(err, diff.ErrNoProcessor) {
				// NotImplemented lets the diff service try its next applier.
				err = withClass(err, errdefs.ErrNotImplemented)
			}
			return emptyDesc, fmt.Errorf("failed to get stream processor for %s: %w", desc.MediaType, err)
		}
		processors = append(processors, next)
		stream = next
	}
	if len(processors) > 0 {
		defer stream.Close()
	}

	var input io.Reader = stream
	if !coreMediaTypes[stream.MediaType()] {
		input, err = refuseCompressedTar(stream, stream.MediaType())
		if err != nil {
			return emptyDesc, err
		}
	}

	if d.mountManager != nil && len(mounts) > 1 {
		var b [3]byte
		_, _ = rand.Read(b[:])
		id := fmt.Sprintf("layerdiff-diffapply-%d-%s", t1.Nanosecond(), base64.URLEncoding.EncodeToString(b[:]))
		info, err := d.mountManager.Activate(ctx, id, mounts)
		if err == nil {
			defer d.mountManager.Deactivate(ctx, id)
			mounts = info.System
		} else if !errdefs.IsNotImplemented(err) {
			return emptyDesc, fmt.Errorf("failed to activate mounts: %w", err)
		}
	}

	res, err := applyMounts(ctx, mounts, input, config.SyncFs, d.unpackThreads)
	if err != nil {
		return emptyDesc, err
	}

	for _, p := range processors {
		if ep, ok := p.(interface{ Err() error }); ok {
			if err := ep.Err(); err != nil {
				return emptyDesc, err
			}
		}
	}

	return ocispec.Descriptor{
		MediaType: ocispec.MediaTypeImageLayer,
		Size:      res.Size,
		Digest:    res.Digest,
	}, nil
}

// applyMounts applies r onto the mounts: straight into the upperdir of a single overlay
// mount (overlay whiteouts, lowerdirs as parents) or the rw branch of a single aufs mount
// (whiteouts kept as files, ro branches as parents; containerd 1.x's path), else onto a
// temporary mount.
// WithUnpackThreads sets the number of threads that make files in Apply
// (ApplyOptions.UnpackThreads; 0, the default, lets the core choose).
func WithUnpackThreads(n uint32) DifferOpt {
	return func(d *Differ) { d.unpackThreads = n }
}

func applyMounts(ctx context.Context, mounts []mount.Mount, r io.Reader, sync bool, threads uint32) (res ApplyResult, retErr error) {
	switch {
	case len(mounts) == 1 && mounts[0].Type == "overlay":
		// Rootless too (containerd mounts instead, as mknod of whiteouts was refused in a
		// user namespace before Linux 5.8): a userxattr mount reads user.overlay.* forms,
		// which the core also picks on its own inside a user namespace.
		xattrs := OverlayXattrsAuto
		if slices.Contains(mounts[0].Options, "userxattr") {
			xattrs = OverlayXattrsUser
		}
		upper, lowers, err := overlayDirs(mounts[0].Options)
		if err != nil {
			if errdefs.IsInvalidArgument(err) {
				break
			}
			return res, err
		}
		return Apply(ctx, upper, r, ApplyOptions{
			Whiteouts: WhiteoutsOverlay, Parents: lowers, SyncFs: sync, OverlayXattrs: xattrs,
			UnpackThreads: threads,
		})
	case len(mounts) == 1 && mounts[0].Type == "aufs":
		rw, ro, err := aufsDirs(mounts[0].Options)
		if err != nil {
			if errdefs.IsInvalidArgument(err) {
				break
			}
			return res, err
		}
		// containerd 1.x ignored sync here; a requested sync is done (docs/deviations.md).
		return Apply(ctx, rw, r, ApplyOptions{
			Whiteouts: WhiteoutsAufs, Parents: ro, SyncFs: sync, UnpackThreads: threads,
		})
	case sync && len(mounts) == 1 && mounts[0].Type == "bind":
		defer func() {
			if retErr == nil {
				retErr = syncFs(mounts[0].Source)
			}
		}()
	}
	retErr = mount.WithTempMount(ctx, mounts, func(root string) error {
		var err error
		res, err = Apply(ctx, root, r, ApplyOptions{UnpackThreads: threads})
		return err
	})
	return res, retErr
}

// overlayDirs returns the upperdir and lowerdirs (top first) of overlay mount options.
func overlayDirs(options []string) (upper string, lowers []string, err error) {
	for _, o := range options {
		if after, ok := strings.CutPrefix(o, "upperdir="); ok {
			upper = after
		} else if after, ok := strings.CutPrefix(o, "lowerdir="); ok {
			lowers = strings.Split(after, ":")
		}
	}
	if upper == "" {
		return "", nil, fmt.Errorf("upperdir not found: %w", errdefs.ErrInvalidArgument)
	}
	return upper, lowers, nil
}

func syncFs(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("failed to open %s: %w", path, err)
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("failed to syncfs for %s: %w", path, err)
	}
	return nil
}

// refuseCompressedTar rejects a stream declared plain tar that starts like gzip or zstd:
// containerd does not sniff plain tar and fails on it, while the core would decompress it.
func refuseCompressedTar(r io.Reader, mediaType string) (io.Reader, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	head, err := br.Peek(4)
	if err != nil && err != io.EOF {
		return nil, fmt.Errorf("reading layer: %w", err)
	}
	for _, m := range []struct {
		name  string
		magic []byte
	}{{"gzip", []byte{0x1f, 0x8b, 0x08}}, {"zstd", []byte{0x28, 0xb5, 0x2f, 0xfd}}} {
		if bytes.HasPrefix(head, m.magic) {
			return nil, fmt.Errorf("layer of media type %s is %s-compressed, not a tar: %w",
				mediaType, m.name, ErrInvalidArchive)
		}
	}
	return br, nil
}

// progressReader reports bytes read from the content store like containerd's applier:
// the running count before each read (0 first) and the total on close.
type progressReader struct {
	r        io.Reader
	c        io.Closer
	n        int64
	progress func(int64)
}

func newProgressReader(ra content.ReaderAt, progress func(int64)) io.ReadCloser {
	return &progressReader{r: content.NewReader(ra), c: ra, progress: progress}
}

func (p *progressReader) Read(b []byte) (int, error) {
	p.progress(p.n)
	n, err := p.r.Read(b)
	p.n += int64(n)
	return n, err
}

func (p *progressReader) Close() error {
	p.progress(p.n)
	return p.c.Close()
}

type readCloser struct {
	io.Reader
	io.Closer
}
