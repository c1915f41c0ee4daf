// Command layerdiff-diffd serves containerd's Diff API (containerd.services.diff.v1) with the
// layerdiff differ on a unix socket, so a stock containerd uses layerdiff through a proxy
// plugin, no fork needed:
//
//	[proxy_plugins.layerdiff]
//	  type = 'diff'
//	  address = '/run/layerdiff-diffd/diffd.sock'
//
// It reads and writes blobs through the content API of the containerd it serves
// (--containerd-address), in each request's namespace. Run it as root on the daemon's host:
// it mounts snapshots and writes into their directories.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"time"

	contentapi "github.com/containerd/containerd/api/services/content/v1"
	diffapi "github.com/containerd/containerd/api/services/diff/v1"
	leasesapi "github.com/containerd/containerd/api/services/leases/v1"
	contentproxy "github.com/containerd/containerd/v2/core/content/proxy"
	"github.com/containerd/containerd/v2/core/diff/apply"
	leasesproxy "github.com/containerd/containerd/v2/core/leases/proxy"
	"github.com/containerd/containerd/v2/core/mount"
	mountproxy "github.com/containerd/containerd/v2/core/mount/proxy"
	"github.com/containerd/containerd/v2/defaults"
	"github.com/containerd/containerd/v2/pkg/dialer"
	"github.com/containerd/log"
	metrics "github.com/docker/go-metrics"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"

	layerdiff "github.com/layerdiff/layerdiff/go"
	"github.com/layerdiff/layerdiff/go/internal/daemondiffer"
)

const (
	defaultState   = "/run/layerdiff-diffd"
	defaultAddress = defaultState + "/diffd.sock"
)

type options struct {
	address           string
	containerdAddress string
	containerdConfig  string
	state             string
	metricsAddress    string
	logLevel          string
	logFormat         string
	shutdownTimeout   time.Duration
	blobLease         time.Duration
	version           bool
}

const usageHead = `Usage: layerdiff-diffd [flags]

Serves containerd's Diff API with the layerdiff differ on a unix socket, for a stock
containerd's proxy plugin. In containerd's config.toml (version 4; the README of
github.com/layerdiff/layerdiff has the whole config, CRI included):

  [proxy_plugins.layerdiff]
    type = 'diff'
    address = '/run/layerdiff-diffd/diffd.sock'

  # Unpacks by clients (ctr images import --local, client.Pull, CRI's local pull):
  [plugins.'io.containerd.service.v1.diff-service']
    default = ['layerdiff', 'walking']

  # Unpacks by the transfer service (ctr images import/pull, CRI pulls), per snapshotter:
  [[plugins.'io.containerd.transfer.v1.local'.unpack_config]]
    platform = 'linux/amd64'
    snapshotter = 'overlayfs'
    differ = 'layerdiff'

Layers of media types that need a stream processor (encrypted layers) use the processors
of --containerd-config, as the daemon does; a layer layerdiff does not apply goes to
containerd's own applier here, as the walking differ would apply it. A diff of a media type
layerdiff does not write is answered "not implemented", so the diff service passes it to
walking. SIGTERM or SIGINT stops it: requests in flight get
--shutdown-timeout to finish, then are cancelled; the socket is removed.

Flags:
`

func parseFlags(args []string) (options, *flag.FlagSet, error) {
	var o options
	fs := flag.NewFlagSet("layerdiff-diffd", flag.ContinueOnError)
	// Errors are reported in one line by main; the usage is printed only for --help.
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.address, "address", defaultAddress, "unix socket to serve the Diff API on")
	fs.StringVar(&o.containerdAddress, "containerd-address", defaults.DefaultAddress, "containerd's socket, for its content and mounts APIs")
	fs.StringVar(&o.containerdConfig, "containerd-config", filepath.Join(defaults.DefaultConfigDir, "config.toml"),
		"containerd's config file, for its [stream_processors] (missing: containerd's defaults)")
	fs.StringVar(&o.state, "state", defaultState, "directory for temporary mounts (cleaned at startup)")
	fs.StringVar(&o.metricsAddress, "metrics-address", "", "host:port to serve Prometheus metrics on at /v1/metrics (off when empty)")
	fs.StringVar(&o.logLevel, "log-level", "info", "trace, debug, info, warn or error (debug logs every request)")
	fs.StringVar(&o.logFormat, "log-format", string(log.TextFormat), "text or json")
	fs.DurationVar(&o.shutdownTimeout, "shutdown-timeout", 10*time.Second, "how long requests in flight may run on after SIGTERM")
	fs.DurationVar(&o.blobLease, "diff-lease", time.Hour,
		"how long a diff blob is kept for a client that has not referenced it yet (containerd does not pass the client's lease on)")
	fs.BoolVar(&o.version, "version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return o, fs, err
	}
	if fs.NArg() > 0 {
		return o, fs, fmt.Errorf("unexpected argument %q (flags only)", fs.Arg(0))
	}
	return o, fs, nil
}

func main() {
	o, fs, err := parseFlags(os.Args[1:])
	switch {
	case errors.Is(err, flag.ErrHelp):
		fmt.Print(usageHead)
		fs.SetOutput(os.Stdout)
		fs.PrintDefaults()
		return
	case err != nil:
		fmt.Fprintf(os.Stderr, "layerdiff-diffd: %v (see --help)\n", err)
		os.Exit(2)
	case o.version:
		fmt.Printf("layerdiff-diffd %s\n", layerdiff.Version())
		return
	}
	if err := run(o); err != nil {
		fmt.Fprintf(os.Stderr, "layerdiff-diffd: %v\n", err)
		os.Exit(1)
	}
}

func run(o options) error {
	if err := log.SetLevel(o.logLevel); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	if err := log.SetFormat(log.OutputFormat(o.logFormat)); err != nil {
		return fmt.Errorf("--log-format: %w", err)
	}
	ctx := context.Background()
	// From the start: a SIGTERM while starting up stops the server once it is up, cleanly.
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, unix.SIGTERM, unix.SIGINT)

	// The socket first: a second diffd must not touch the first one's mounts.
	l, err := listen(o.address)
	if err != nil {
		return err
	}
	defer l.Close()
	if err := cleanTempMounts(ctx, filepath.Join(o.state, "tmpmounts")); err != nil {
		return err
	}
	if err := registerStreamProcessors(ctx, o.containerdConfig); err != nil {
		return err
	}

	conn, err := dialContainerd(o.containerdAddress)
	if err != nil {
		return err
	}
	defer conn.Close()
	// The daemon's mount manager activates multi-mount sets as it does for its own differs;
	// a daemon without the mounts API answers NotImplemented and the mounts are used as given.
	cs := streamingStore{Store: contentproxy.NewContentStore(conn), client: contentapi.NewContentClient(conn)}
	mm := mountproxy.NewMountManager(conn)
	differ := daemondiffer.New(layerdiff.NewDiffer(cs, layerdiff.WithMountManager(mm)),
		apply.NewFileSystemApplierWithMountManager(cs, mm))

	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(recoverUnary), grpc.WaitForHandlers(true))
	diffapi.RegisterDiffServer(srv, &diffServer{differ: differ,
		leases: leasesproxy.NewLeaseManager(leasesapi.NewLeasesClient(conn)), blobLease: o.blobLease})

	var metricsSrv *http.Server
	if o.metricsAddress != "" {
		if metricsSrv, err = serveMetrics(ctx, o.metricsAddress); err != nil {
			return err
		}
	}

	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	log.G(ctx).WithFields(log.Fields{
		"address":    o.address,
		"containerd": o.containerdAddress,
		"version":    layerdiff.Version(),
	}).Info("layerdiff-diffd serving the Diff API")

	select {
	case err := <-served:
		// Serve only returns on its own when the listener fails.
		os.Remove(o.address)
		return fmt.Errorf("serving: %w", err)
	case sig := <-signals:
		log.G(ctx).WithField("signal", sig).Info("stopping")
	}
	stopped := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(o.shutdownTimeout):
		log.G(ctx).Warn("requests still running after --shutdown-timeout, cancelling them")
		srv.Stop() // cancels their contexts and waits for them (WaitForHandlers): mounts are undone
	case sig := <-signals:
		log.G(ctx).WithField("signal", sig).Warn("second signal, cancelling requests in flight")
		srv.Stop()
	}
	<-stopped
	if metricsSrv != nil {
		metricsSrv.Close()
	}
	if err := os.Remove(o.address); err != nil && !errors.Is(err, os.ErrNotExist) {
		log.G(ctx).WithError(err).Warn("removing the socket")
	}
	log.G(ctx).Info("stopped")
	return nil
}

// cleanTempMounts makes dir the place of temporary mounts and unmounts what a predecessor
// that died mid-request left there (as containerd does with its tmpmounts).
func cleanTempMounts(ctx context.Context, dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := mount.SetTempMountLocation(dir); err != nil {
		return err
	}
	warnings, err := mount.CleanupTempMounts(0)
	for _, w := range warnings {
		log.G(ctx).WithError(w).Warn("cleanup temp mount")
	}
	if err != nil {
		return fmt.Errorf("unmounting leftover temporary mounts: %w", err)
	}
	return nil
}

// dialContainerd returns a lazy connection to containerd, configured as containerd's own
// clients of proxy plugins are (cmd/containerd/server proxyClients.getClient).
func dialContainerd(address string) (*grpc.ClientConn, error) {
	backoffConfig := backoff.DefaultConfig
	backoffConfig.MaxDelay = 3 * time.Second
	conn, err := grpc.NewClient(dialer.DialAddress(address),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoffConfig}),
		grpc.WithContextDialer(dialer.ContextDialer),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(defaults.DefaultMaxRecvMsgSize)),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(defaults.DefaultMaxSendMsgSize)),
	)
	if err != nil {
		return nil, fmt.Errorf("containerd at %s: %w", address, err)
	}
	return conn, nil
}

// listen binds the unix socket, only root may connect. A socket left by a predecessor that
// died is replaced; one a running server answers on is not.
func listen(address string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(address), 0o711); err != nil {
		return nil, err
	}
	if fi, err := os.Lstat(address); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("%s exists and is not a socket", address)
		}
		if c, err := net.DialTimeout("unix", address, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("%s: a server is already listening there", address)
		}
		if err := os.Remove(address); err != nil {
			return nil, err
		}
	}
	// The socket is created 0600 rather than chmodded after bind, so nobody can connect
	// in between.
	old := unix.Umask(0o177)
	l, err := net.Listen("unix", address)
	unix.Umask(old)
	if err != nil {
		return nil, err
	}
	return l, nil
}

// serveMetrics serves the Prometheus registry (the layerdiff counters among it) as
// containerd's metrics server does (plugins/server/metrics): TCP, at /v1/metrics.
func serveMetrics(ctx context.Context, address string) (*http.Server, error) {
	l, err := net.Listen("tcp", address)
	if err != nil {
		return nil, fmt.Errorf("--metrics-address: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/metrics", metrics.Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: time.Minute}
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.G(ctx).WithError(err).Error("metrics server")
		}
	}()
	return srv, nil
}
