package e2e

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	diffapi "github.com/containerd/containerd/api/services/diff/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// TestDiffdCommandLine: --help and --version answer on stdout with status 0; a bad flag or
// argument is one line on stderr with status 2.
func TestDiffdCommandLine(t *testing.T) {
	requireDaemons(t)
	bin := filepath.Join(env.bins, "layerdiff-diffd")
	for _, c := range []struct {
		args   []string
		status int
		stdout string // contained
		stderr string // the whole stderr is this one line's start
	}{
		{[]string{"--help"}, 0, "[proxy_plugins.layerdiff]", ""},
		{[]string{"--version"}, 0, "layerdiff-diffd ", ""},
		{[]string{"--no-such-flag"}, 2, "", "layerdiff-diffd: flag provided but not defined: -no-such-flag"},
		{[]string{"stray"}, 2, "", `layerdiff-diffd: unexpected argument "stray"`},
		{[]string{"--log-level", "loud", "--address", filepath.Join(t.TempDir(), "s.sock")}, 1, "", "layerdiff-diffd: --log-level: "},
	} {
		cmd := exec.Command(bin, c.args...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		status := cmd.ProcessState.ExitCode()
		if err != nil && status < 0 {
			t.Fatal(err)
		}
		if status != c.status || !strings.Contains(stdout.String(), c.stdout) {
			t.Errorf("%v: status %d, stdout %q", c.args, status, stdout.String())
		}
		if c.stderr == "" && stderr.Len() > 0 || c.stderr != "" && (!strings.HasPrefix(stderr.String(), c.stderr) || strings.Count(stderr.String(), "\n") != 1) {
			t.Errorf("%v: stderr %q, want one line starting %q", c.args, stderr.String(), c.stderr)
		}
	}
}

// TestDiffdSocket: a second diffd on a live socket refuses in one line and leaves it alone;
// a socket left by a dead one is taken over; SIGTERM stops diffd with status 0 and removes
// its socket.
func TestDiffdSocket(t *testing.T) {
	requireDaemons(t)
	bin := filepath.Join(env.bins, "layerdiff-diffd")
	live := env.proxy.diffd.address
	out, err := exec.Command(bin, "--address", live, "--state", t.TempDir()).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "a server is already listening there") || strings.Count(string(out), "\n") != 1 {
		t.Errorf("second diffd on a live socket: %v, %q", err, out)
	}
	if _, err := os.Stat(live); err != nil {
		t.Fatalf("the live socket is gone: %v", err)
	}
	env.proxy.counters(t) // still serving

	dir := t.TempDir()
	stale := filepath.Join(dir, "stale.sock")
	l, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	dd, err := startDiffd(env.bins, dir, stale, env.stock.address, nil)
	if err != nil {
		t.Fatalf("diffd on a stale socket: %v", err)
	}
	diffClient(t, stale)              // it answers
	if err := dd.stop(); err != nil { // SIGTERM, status 0, socket removed
		t.Fatal(err)
	}
}

// TestDiffdNamespace: a request without a namespace fails as containerd's services fail it
// (failed precondition), in one line.
func TestDiffdNamespace(t *testing.T) {
	requireDaemons(t)
	c := diffClient(t, env.proxy.diffd.address)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := c.Apply(ctx, &diffapi.ApplyRequest{Diff: &types.Descriptor{MediaType: "application/vnd.oci.image.layer.v1.tar", Digest: "sha256:" + strings.Repeat("0", 64)}})
	err = errgrpc.ToNative(err)
	if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "namespace is required") || strings.Contains(err.Error(), "\n") {
		t.Errorf("Apply without a namespace: %v", err)
	}
	_, err = c.Apply(ctx, &diffapi.ApplyRequest{})
	if err == nil {
		t.Errorf("Apply without a descriptor: no error")
	}
}

func diffClient(t *testing.T, address string) diffapi.DiffClient {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return diffapi.NewDiffClient(conn)
}
