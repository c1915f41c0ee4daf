package main

import (
	"context"
	"fmt"
	"io"

	contentapi "github.com/containerd/containerd/api/services/content/v1"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/errdefs/pkg/errgrpc"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// streamingStore is the daemon's content store (core/content/proxy) with one read stream
// per blob. The proxy store's ReaderAt makes a Read call per ReadAt, a round trip for every
// 256 KiB the differ reads; a layer is read front to back, so one stream from the first
// offset serves it all.
type streamingStore struct {
	content.Store
	client contentapi.ContentClient
}

func (s streamingStore) ReaderAt(ctx context.Context, desc ocispec.Descriptor) (content.ReaderAt, error) {
	ra, err := s.Store.ReaderAt(ctx, desc)
	if err != nil {
		return nil, err
	}
	return &streamReaderAt{ReaderAt: ra, ctx: ctx, client: s.client, digest: desc.Digest}, nil
}

// streamReaderAt serves sequential ReadAt calls from one Read stream, and restarts the
// stream at any other offset.
type streamReaderAt struct {
	content.ReaderAt // Size, Close, and reads at or past the end
	ctx              context.Context
	client           contentapi.ContentClient
	digest           digest.Digest

	stream  contentapi.Content_ReadClient
	cancel  context.CancelFunc
	next    int64  // the offset of pending[0]
	pending []byte // received and not yet read
}

func (r *streamReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off >= r.Size() {
		return r.ReaderAt.ReadAt(p, off)
	}
	if r.stream == nil || off != r.next {
		r.stop()
		ctx, cancel := context.WithCancel(r.ctx)
		// Size 0: from off to the end of the blob.
		stream, err := r.client.Read(ctx, &contentapi.ReadContentRequest{Digest: r.digest.String(), Offset: off})
		if err != nil {
			cancel()
			return 0, errgrpc.ToNative(err)
		}
		r.stream, r.cancel, r.next, r.pending = stream, cancel, off, nil
	}
	n := 0
	for n < len(p) {
		if len(r.pending) == 0 {
			resp, err := r.stream.Recv()
			if err != nil {
				r.stop()
				if err == io.EOF {
					return n, io.EOF
				}
				return n, errgrpc.ToNative(err)
			}
			if resp.Offset != r.next {
				r.stop()
				return n, fmt.Errorf("content read of %s: data at offset %d, want %d", r.digest, resp.Offset, r.next)
			}
			r.pending = resp.Data
		}
		c := copy(p[n:], r.pending)
		r.pending = r.pending[c:]
		r.next += int64(c)
		n += c
	}
	return n, nil
}

func (r *streamReaderAt) stop() {
	if r.cancel != nil {
		r.cancel() // ends the stream on both sides
	}
	r.stream, r.cancel, r.pending = nil, nil, nil
}

func (r *streamReaderAt) Close() error {
	r.stop()
	return r.ReaderAt.Close()
}
