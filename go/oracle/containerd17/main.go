// Command containerd17 applies a layer the way containerd 1.7's fs applier does on a single
// aufs mount: archive.Apply with archive.AufsConvertWhiteout and the ro branches as parents.
// It is the test oracle for layerdiff's aufs whiteout mode, in a module of its own so that
// containerd 1.x never enters go/go.mod.
//
// Usage: containerd17 ROOT [PARENT]... < LAYER (tar, gzip or zstd); prints the
// diffID and the uncompressed size.
package main

import (
	"context"
	_ "crypto/sha256" // digest.Canonical
	"fmt"
	"io"
	"os"

	"github.com/containerd/containerd/archive"
	"github.com/containerd/containerd/archive/compression"
	"github.com/opencontainers/go-digest"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: containerd17 ROOT [PARENT]... < layer")
		os.Exit(2)
	}
	if err := apply(os.Args[1], os.Args[2:], os.Stdin); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// apply mirrors containerd 1.7's diff/apply: decompress, hash while applying, read the rest.
func apply(root string, parents []string, r io.Reader) error {
	ds, err := compression.DecompressStream(r)
	if err != nil {
		return err
	}
	defer ds.Close()
	dgst := digest.Canonical.Digester()
	hashed := &countingWriter{w: dgst.Hash()}
	tee := io.TeeReader(ds, hashed)
	opts := []archive.ApplyOpt{archive.WithConvertWhiteout(archive.AufsConvertWhiteout)}
	if len(parents) > 0 {
		opts = append(opts, archive.WithParents(parents))
	}
	if _, err := archive.Apply(context.Background(), root, tee, opts...); err != nil {
		return err
	}
	if _, err := io.Copy(io.Discard, tee); err != nil {
		return err
	}
	fmt.Println(dgst.Digest(), hashed.n)
	return nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
