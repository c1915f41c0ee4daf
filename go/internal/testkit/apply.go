package testkit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/archive"
	"github.com/containerd/containerd/v2/pkg/archive/compression"
	"github.com/opencontainers/go-digest"
)

// containerd's DecompressStream runs igzip or unpigz instead of its Go gzip reader when either
// is on PATH (decided once per process), and those accept trailing garbage and truncated
// streams that the Go reader refuses. Pin the Go reader so that the oracle is the same on
// every host; a setting already in the environment wins.
func init() {
	for _, env := range []string{"CONTAINERD_DISABLE_IGZIP", "CONTAINERD_DISABLE_PIGZ"} {
		if _, set := os.LookupEnv(env); !set {
			os.Setenv(env, "1")
		}
	}
}

// Result is what one applier reported: the digest and size of the uncompressed stream it read,
// or why it failed.
type Result struct {
	Digest string
	Size   int64
	Err    error
}

// CountingReader counts the bytes read through it.
type CountingReader struct {
	R io.Reader
	N int64
}

func (c *CountingReader) Read(p []byte) (int, error) {
	n, err := c.R.Read(p)
	c.N += int64(n)
	return n, err
}

// ApplyContainerd does what containerd's fs applier does: decompress (gzip/zstd detected),
// hash while archive.Apply reads, then read the trailing bytes. Overlay mode converts
// whiteouts with the given lowerdirs as parents. A run longer than hangAfter fails the test.
func ApplyContainerd(t testing.TB, root string, layer []byte, overlay bool, parents []string, hangAfter time.Duration) Result {
	t.Helper()
	done := make(chan Result, 1)
	go func() {
		ds, err := compression.DecompressStream(bytes.NewReader(layer))
		if err != nil {
			done <- Result{Err: err}
			return
		}
		defer ds.Close()
		dgst := digest.Canonical.Digester()
		cr := &CountingReader{R: io.TeeReader(ds, dgst.Hash())}
		var opts []archive.ApplyOpt
		if overlay {
			opts = append(opts, archive.WithConvertWhiteout(archive.OverlayConvertWhiteout))
			if len(parents) > 0 {
				opts = append(opts, archive.WithParents(parents))
			}
		}
		if _, err := archive.Apply(context.Background(), root, cr, opts...); err != nil {
			done <- Result{Err: err}
			return
		}
		if _, err := io.Copy(io.Discard, cr); err != nil {
			done <- Result{Err: err}
			return
		}
		done <- Result{Digest: dgst.Digest().String(), Size: cr.N}
	}()
	select {
	case r := <-done:
		return r
	case <-time.After(hangAfter):
		t.Fatalf("containerd's archive.Apply hung on %s", root)
		return Result{}
	}
}

// ErrHang marks a CLI run that had to be killed after hangAfter.
var ErrHang = errors.New("layerdiff apply hung (killed)")

// ErrCrash marks a CLI run killed by a signal: a crash, never an acceptable refusal.
var ErrCrash = errors.New("layerdiff apply crashed")

// ApplyOurs runs `layerdiff apply` on layer (fed through stdin) the same way. A failure must
// say why on stderr; a hang or a crash is reported as ErrHang / ErrCrash.
func ApplyOurs(t testing.TB, root string, layer []byte, overlay bool, parents []string, hangAfter time.Duration) Result {
	t.Helper()
	if !overlay {
		return applyCLI(t, root, layer, "remove", nil, hangAfter)
	}
	return applyCLI(t, root, layer, "overlay", parents, hangAfter)
}

// applyCLI runs `layerdiff apply --whiteouts MODE [--parent P]... - ROOT` on layer.
func applyCLI(t testing.TB, root string, layer []byte, whiteouts string, parents []string, hangAfter time.Duration) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hangAfter)
	defer cancel()
	args := []string{"apply", "--whiteouts", whiteouts}
	for _, p := range parents {
		args = append(args, "--parent", p)
	}
	args = append(args, "-", root)
	cmd := exec.CommandContext(ctx, LayerdiffBin(t), args...)
	cmd.Stdin = bytes.NewReader(layer)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		return Result{Err: ErrHang}
	}
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if ee := (*exec.ExitError)(nil); errors.As(err, &ee) && ee.ExitCode() < 0 {
			return Result{Err: fmt.Errorf("%w (%v): %s", ErrCrash, err, msg)}
		}
		if msg == "" {
			return Result{Err: fmt.Errorf("%v with nothing on stderr (an error must say why)", err)}
		}
		return Result{Err: fmt.Errorf("%v: %s", err, msg)}
	}
	var out struct {
		MediaType string `json:"mediaType"`
		Digest    string `json:"digest"`
		Size      int64  `json:"size"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		t.Fatalf("bad CLI output %q: %v", stdout.String(), err)
	}
	if out.MediaType != "application/vnd.oci.image.layer.v1.tar" {
		t.Errorf("layerdiff apply reported media type %q", out.MediaType)
	}
	return Result{Digest: out.Digest, Size: out.Size}
}
