package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	srvconfig "github.com/containerd/containerd/v2/cmd/containerd/server/config"
	"github.com/containerd/containerd/v2/core/diff"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/defaults"
	"github.com/containerd/log"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// registerStreamProcessors registers the daemon's stream processors (containerd's defaults,
// then the [stream_processors] of its config file, as the daemon merges them), so layers of
// media types only a processor turns into a tar (encrypted layers) are applied here as they
// are inside the daemon. That matters for the transfer service, which calls its unpack
// differ directly: a "not implemented" from here would fail the pull there, not fall back.
// A missing file is not an error (the daemon then runs on its defaults too).
func registerStreamProcessors(ctx context.Context, path string) error {
	config := &srvconfig.Config{StreamProcessors: defaultStreamProcessors()}
	if path != "" {
		err := srvconfig.LoadConfig(ctx, path, config)
		switch {
		case errors.Is(err, os.ErrNotExist):
			log.G(ctx).WithField("path", path).Debug("no containerd config, using containerd's default stream processors")
		case err != nil:
			return fmt.Errorf("--containerd-config: %w", err)
		}
	}
	for id, p := range config.StreamProcessors {
		// As containerd's server.New does.
		diff.RegisterProcessor(diff.BinaryHandler(id, p.Returns, p.Accepts, p.Path, p.Args, p.Env))
		log.G(ctx).WithFields(log.Fields{"id": id, "accepts": p.Accepts, "path": p.Path}).Debug("stream processor registered")
	}
	return nil
}

// defaultStreamProcessors are containerd's default stream processors (streamProcessors in
// cmd/containerd/command/config.go): the ocicrypt decoder for encrypted layers.
func defaultStreamProcessors() map[string]srvconfig.StreamProcessor {
	const (
		ctdDecoder = "ctd-decoder"
		basename   = "io.containerd.ocicrypt.decoder.v1"
	)
	args := []string{"--decryption-keys-path", filepath.Join(defaults.DefaultConfigDir, "ocicrypt", "keys")}
	env := []string{"OCICRYPT_KEYPROVIDER_CONFIG=" + filepath.Join(defaults.DefaultConfigDir, "ocicrypt", "ocicrypt_keyprovider.conf")}
	return map[string]srvconfig.StreamProcessor{
		basename + ".tar.gzip": {
			Accepts: []string{images.MediaTypeImageLayerGzipEncrypted},
			Returns: ocispec.MediaTypeImageLayerGzip,
			Path:    ctdDecoder,
			Args:    args,
			Env:     env,
		},
		basename + ".tar": {
			Accepts: []string{images.MediaTypeImageLayerEncrypted},
			Returns: ocispec.MediaTypeImageLayer,
			Path:    ctdDecoder,
			Args:    args,
			Env:     env,
		},
	}
}
