// Package e2e runs layerdiff inside real containerd daemons: containerd built with the
// layerdiff plugin ("fork"), stock containerd with layerdiff-diffd as its proxy diff plugin
// ("proxy"), and stock containerd with only the walking differ as the reference. Each daemon
// runs as root with its own root, state directory, socket and debug log under one tmpfs,
// CRI off; they are stopped by PID, and the run fails if anything is left mounted.
//
// Run it with `make e2e` (it needs the installed library: PKG_CONFIG_PATH pointing at
// layerdiff-static.pc). E2E_BIN_CACHE=DIR keeps the built daemons between runs (make e2e
// uses build/e2e-bin).
package e2e

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// env is what TestMain set up for every test.
var env struct {
	skip string // why the daemon tests cannot run here ("" = they can)

	bins string // containerd, ctr, containerd-layerdiff, layerdiff-diffd
	tmp  string // the tmpfs everything lives on

	stock, fork, proxy *daemon
	images             *testImages
}

func TestMain(m *testing.M) {
	flag.Parse()
	code, err := run(m)
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

func run(m *testing.M) (code int, err error) {
	if os.Geteuid() != 0 {
		env.skip = "SKIP: the e2e tests need root (the daemons mount snapshots)"
		fmt.Fprintln(os.Stderr, env.skip)
		return m.Run(), nil
	}
	pcPath, err := findPC()
	if err != nil {
		return 1, err
	}

	tmp, err := os.MkdirTemp("", "layerdiff-e2e-")
	if err != nil {
		return 1, err
	}
	env.tmp = tmp
	defer func() {
		if cerr := cleanup(tmp, code != 0); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()
	// One tmpfs for every daemon: timings measure the differs, not the disk.
	if err := unix.Mount("tmpfs", tmp, "tmpfs", 0, "size=8g,mode=0700"); err != nil {
		return 1, fmt.Errorf("mounting a tmpfs at %s: %w", tmp, err)
	}
	if err := checkOverlay(tmp); err != nil {
		env.skip = "SKIP: the e2e tests need overlayfs: " + err.Error()
		fmt.Fprintln(os.Stderr, env.skip)
		return m.Run(), nil
	}

	if env.bins, err = binaries(pcPath); err != nil {
		return 1, err
	}
	if env.images, err = buildImages(filepath.Join(tmp, "images")); err != nil {
		return 1, err
	}

	ctx := context.Background()
	procs := []streamProcessor{handledProcessor, daemonOnlyProcessor}
	if env.stock, err = startDaemon(ctx, env.bins, tmp, stockWalking, daemonOptions{processors: procs}); err != nil {
		return 1, err
	}
	if env.fork, err = startDaemon(ctx, env.bins, tmp, fork, daemonOptions{processors: procs}); err != nil {
		return 1, err
	}
	if env.proxy, err = startDaemon(ctx, env.bins, tmp, proxy, daemonOptions{processors: procs,
		diffdProcessors: []streamProcessor{handledProcessor}}); err != nil {
		return 1, err
	}
	return m.Run(), nil
}

// requireDaemons skips (loudly, with -v or not) where the daemons could not run.
func requireDaemons(t *testing.T) {
	t.Helper()
	if env.skip != "" {
		t.Skip(env.skip)
	}
}

// findPC checks that the Go package can find the installed library, as `make e2e` arranges.
func findPC() (string, error) {
	out, err := exec.Command("pkg-config", "--variable=pcfiledir", "layerdiff-static").Output()
	if err != nil {
		return "", fmt.Errorf("pkg-config finds no layerdiff-static.pc (run `make e2e`, or `make install` and set PKG_CONFIG_PATH): %v", err)
	}
	return filepath.Join(strings.TrimSpace(string(out)), "layerdiff-static.pc"), nil
}

// binaries returns a directory with the four programs, built once per source state when
// E2E_BIN_CACHE is set (older builds there are removed), else into the test's temporary
// directory.
func binaries(pcPath string) (string, error) {
	cache := os.Getenv("E2E_BIN_CACHE")
	if cache == "" {
		dir := filepath.Join(env.tmp, "bin")
		return dir, buildBinaries(dir)
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	key, err := binaryKey(filepath.Dir(wd), pcPath)
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cache, key)
	if _, err := os.Stat(filepath.Join(dir, "complete")); err == nil {
		return dir, nil
	}
	if err := buildBinaries(dir); err != nil {
		return "", err
	}
	if old, err := filepath.Glob(filepath.Join(cache, "*")); err == nil {
		for _, o := range old {
			if o != dir {
				_ = os.RemoveAll(o)
			}
		}
	}
	return dir, os.WriteFile(filepath.Join(dir, "complete"), nil, 0o644)
}

// checkOverlay mounts a tiny overlay, as the overlayfs snapshotter will.
func checkOverlay(tmp string) error {
	base := filepath.Join(tmp, "overlay-check")
	for _, d := range []string{"lower", "upper", "work", "merged"} {
		if err := os.MkdirAll(filepath.Join(base, d), 0o700); err != nil {
			return err
		}
	}
	opts := fmt.Sprintf("lowerdir=%s/lower,upperdir=%s/upper,workdir=%s/work", base, base, base)
	if err := unix.Mount("overlay", filepath.Join(base, "merged"), "overlay", 0, opts); err != nil {
		return err
	}
	if err := unix.Unmount(filepath.Join(base, "merged"), 0); err != nil {
		return err
	}
	return os.RemoveAll(base)
}

// cleanup stops the daemons, fails on any mount left under tmp (and then unmounts it), keeps
// the logs of a failed run, and removes everything.
func cleanup(tmp string, failed bool) error {
	var errs []error
	for _, d := range []*daemon{env.proxy, env.fork, env.stock} {
		if d != nil {
			if err := d.stop(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	leaked, err := mountsUnder(tmp)
	if err != nil {
		errs = append(errs, err)
	}
	if len(leaked) > 0 {
		errs = append(errs, fmt.Errorf("mounts left behind: %s", strings.Join(leaked, " ")))
		for _, m := range leaked {
			_ = unix.Unmount(m, unix.MNT_DETACH)
		}
	}
	if failed || len(errs) > 0 {
		keep, err := os.MkdirTemp("", "layerdiff-e2e-logs-")
		if err == nil {
			_ = filepath.Walk(tmp, func(p string, fi os.FileInfo, err error) error {
				if err == nil && fi.Mode().IsRegular() && strings.HasSuffix(p, ".log") {
					rel, _ := filepath.Rel(tmp, p)
					b, _ := os.ReadFile(p)
					_ = os.WriteFile(filepath.Join(keep, strings.ReplaceAll(rel, "/", "_")), b, 0o644)
				}
				return nil
			})
			fmt.Fprintf(os.Stderr, "e2e: daemon logs kept in %s\n", keep)
		}
	}
	if err := unix.Unmount(tmp, 0); err != nil && !errors.Is(err, unix.EINVAL) {
		errs = append(errs, fmt.Errorf("unmounting %s: %w", tmp, err))
	}
	if err := os.RemoveAll(tmp); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
