package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"text/template"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// What a daemon's diff service, transfer service and metrics look like.
type daemonKind int

const (
	stockWalking daemonKind = iota // stock containerd, walking only: the reference
	fork                           // containerd built with the layerdiff plugin
	proxy                          // stock containerd with layerdiff-diffd as a proxy plugin
)

func (k daemonKind) String() string {
	return [...]string{"stock-walking", "fork", "proxy"}[k]
}

// daemon is one containerd process with its own root, state, socket and debug log.
type daemon struct {
	kind    daemonKind
	dir     string
	address string
	config  string
	log     string
	metrics string // host:port of the counters that prove which differ applied (containerd's, or diffd's for proxy)
	cmd     *exec.Cmd
	exited  chan struct{}
	client  *containerd.Client
	diffd   *diffd // the proxy's layerdiff-diffd
}

// diffd is one layerdiff-diffd process.
type diffd struct {
	address string
	log     string
	metrics string
	cmd     *exec.Cmd
	exited  chan struct{}
}

// Plugins a test daemon does without: CRI (needs CNI, runc, a pause image), NRI and opt (both
// write outside the daemon's root), so nothing but the temporary directory is touched.
var disabledPlugins = []string{
	"io.containerd.grpc.v1.cri",
	"io.containerd.cri.v1.images",
	"io.containerd.cri.v1.runtime",
	"io.containerd.podsandbox.controller.v1.podsandbox",
	"io.containerd.nri.v1.nri",
	"io.containerd.internal.v1.opt",
}

var configTemplate = template.Must(template.New("config").Parse(`version = 4
root = '{{.Dir}}/root'
state = '{{.Dir}}/state'
disabled_plugins = [{{range $i, $p := .Disabled}}{{if $i}}, {{end}}'{{$p}}'{{end}}]

[debug]
  level = 'debug'

[plugins.'io.containerd.server.v1.grpc']
  address = '{{.Address}}'

[plugins.'io.containerd.server.v1.ttrpc']
  address = '{{.Address}}.ttrpc'

[plugins.'io.containerd.server.v1.metrics']
  address = '{{.Metrics}}'

[plugins.'io.containerd.service.v1.diff-service']
  default = [{{range $i, $d := .Order}}{{if $i}}, {{end}}'{{$d}}'{{end}}]

[plugins.'io.containerd.transfer.v1.local']
  max_concurrent_unpacks = {{.Unpacks}}
{{range .Snapshotters}}
  [[plugins.'io.containerd.transfer.v1.local'.unpack_config]]
    platform = 'linux/amd64'
    snapshotter = '{{.}}'
    differ = '{{$.Differ}}'
{{end}}
{{if .Diffd}}
[proxy_plugins.layerdiff]
  type = 'diff'
  address = '{{.Diffd}}'
{{end}}
{{range .Processors}}
[stream_processors.'{{.ID}}']
  accepts = ['{{.Accepts}}']
  returns = '{{.Returns}}'
  path = '{{.Path}}'
  args = [{{range $i, $a := .Args}}{{if $i}}, {{end}}'{{$a}}'{{end}}]
{{end}}`))

// streamProcessor is a [stream_processors] entry of a test daemon's config.
type streamProcessor struct {
	ID, Accepts, Returns, Path string
	Args                       []string
}

// daemonOptions vary a daemon beyond its kind.
type daemonOptions struct {
	unpacks    int // the transfer service's max_concurrent_unpacks
	processors []streamProcessor
	// diffdProcessors is the config layerdiff-diffd reads its stream processors from (proxy);
	// nil: none beyond containerd's defaults.
	diffdProcessors []streamProcessor
	// readme, when set, is the config (a README block) instead of the test's own: only the
	// root, state, disabled plugins and debug level are added, the socket comes from
	// --address, and layerdiff-diffd's default socket is replaced by the test's.
	readme string
}

// readmeConfig is a README config block made to run in dir.
func readmeConfig(block, dir, diffdAddress string) string {
	var quoted []string
	for _, p := range disabledPlugins {
		quoted = append(quoted, "'"+p+"'")
	}
	top := fmt.Sprintf("root = '%s/root'\nstate = '%s/state'\ndisabled_plugins = [%s]\n", dir, dir, strings.Join(quoted, ", "))
	version, rest, _ := strings.Cut(block, "\n")
	if diffdAddress != "" {
		rest = strings.ReplaceAll(rest, "'"+defaultDiffdAddress+"'", "'"+diffdAddress+"'")
	}
	return version + "\n" + top + rest + "\n[debug]\n  level = 'debug'\n"
}

// defaultDiffdAddress is layerdiff-diffd's default socket, as the README's config names it.
const defaultDiffdAddress = "/run/layerdiff-diffd/diffd.sock"

func writeConfig(path string, data any) error {
	var b bytes.Buffer
	if err := configTemplate.Execute(&b, data); err != nil {
		return err
	}
	return os.WriteFile(path, b.Bytes(), 0o600)
}

// startDaemon starts a daemon of kind in a new directory under parent (and, for proxy, its
// layerdiff-diffd first) and waits until it answers.
func startDaemon(ctx context.Context, bins, parent string, kind daemonKind, o daemonOptions) (*daemon, error) {
	if o.unpacks == 0 {
		o.unpacks = 1
	}
	dir, err := os.MkdirTemp(parent, kind.String()+"-")
	if err != nil {
		return nil, err
	}
	d := &daemon{kind: kind, dir: dir, address: filepath.Join(dir, "containerd.sock"),
		config: filepath.Join(dir, "config.toml"), log: filepath.Join(dir, "containerd.log")}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	containerdMetrics := fmt.Sprintf("127.0.0.1:%d", port)
	d.metrics = containerdMetrics

	order, differ, binary := []string{"walking"}, "walking", filepath.Join(bins, "containerd")
	diffdAddress := ""
	switch kind {
	case fork:
		order, differ, binary = []string{"layerdiff", "walking"}, "layerdiff", filepath.Join(bins, "containerd-layerdiff")
	case proxy:
		order, differ = []string{"layerdiff", "walking"}, "layerdiff"
		diffdAddress = filepath.Join(dir, "diffd", "diffd.sock")
		dd, err := startDiffd(bins, dir, diffdAddress, d.address, o.diffdProcessors)
		if err != nil {
			return nil, err
		}
		d.diffd = dd
		d.metrics = dd.metrics
	}
	if o.readme != "" {
		if err := os.WriteFile(d.config, []byte(readmeConfig(o.readme, dir, diffdAddress)), 0o600); err != nil {
			return nil, err
		}
		d.metrics = ""
		if d.diffd != nil {
			d.metrics = d.diffd.metrics
		}
	} else if err := writeConfig(d.config, map[string]any{
		"Dir": dir, "Address": d.address, "Metrics": containerdMetrics, "Disabled": disabledPlugins,
		"Order": order, "Differ": differ, "Unpacks": o.unpacks, "Snapshotters": []string{"overlayfs", "native"},
		"Diffd": diffdAddress, "Processors": o.processors,
	}); err != nil {
		return nil, err
	}

	logf, err := os.Create(d.log)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	d.cmd = exec.Command(binary, "--config", d.config, "--address", d.address)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	// Its own process group: a signal to the test does not reach it before its cleanup.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := d.cmd.Start(); err != nil {
		d.stop()
		return nil, err
	}
	d.exited = make(chan struct{})
	go func() { _ = d.cmd.Wait(); close(d.exited) }()

	if err := waitFor(10*time.Second, d.exited, func() bool {
		_, err := os.Stat(d.address)
		return err == nil
	}); err != nil {
		d.stop()
		return nil, fmt.Errorf("%s daemon did not start: %v\n%s", kind, err, tail(d.log, 30))
	}
	d.client, err = containerd.New(d.address, containerd.WithTimeout(10*time.Second))
	if err != nil {
		d.stop()
		return nil, fmt.Errorf("%s daemon: %w", kind, err)
	}
	if _, err := d.client.Version(ctx); err != nil {
		d.stop()
		return nil, fmt.Errorf("%s daemon: %w\n%s", kind, err, tail(d.log, 30))
	}
	return d, nil
}

func startDiffd(bins, dir, address, containerdAddress string, processors []streamProcessor) (*diffd, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	dd := &diffd{address: address, log: filepath.Join(dir, "diffd.log"), metrics: fmt.Sprintf("127.0.0.1:%d", port)}
	// Its stream processors come from a config file of their own, so a test can give the
	// daemon processors diffd lacks.
	config := filepath.Join(dir, "diffd-containerd.toml")
	var b bytes.Buffer
	b.WriteString("version = 4\n")
	for _, p := range processors {
		fmt.Fprintf(&b, "[stream_processors.'%s']\n  accepts = ['%s']\n  returns = '%s'\n  path = '%s'\n  args = [", p.ID, p.Accepts, p.Returns, p.Path)
		for i, a := range p.Args {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "'%s'", a)
		}
		b.WriteString("]\n")
	}
	if err := os.WriteFile(config, b.Bytes(), 0o600); err != nil {
		return nil, err
	}
	logf, err := os.Create(dd.log)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	dd.cmd = exec.Command(filepath.Join(bins, "layerdiff-diffd"),
		"--address", address, "--containerd-address", containerdAddress, "--containerd-config", config,
		"--state", filepath.Join(dir, "diffd"), "--metrics-address", dd.metrics, "--log-level", "debug")
	dd.cmd.Stdout, dd.cmd.Stderr = logf, logf
	dd.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := dd.cmd.Start(); err != nil {
		return nil, err
	}
	dd.exited = make(chan struct{})
	go func() { _ = dd.cmd.Wait(); close(dd.exited) }()
	if err := waitFor(10*time.Second, dd.exited, func() bool {
		c, err := net.Dial("unix", address)
		if err == nil {
			c.Close()
		}
		return err == nil
	}); err != nil {
		dd.stop()
		return nil, fmt.Errorf("layerdiff-diffd did not start: %v\n%s", err, tail(dd.log, 30))
	}
	return dd, nil
}

// stop ends the daemon by its PID (SIGTERM, then SIGKILL after 30 s), then its diffd.
func (d *daemon) stop() error {
	var errs []error
	if d.client != nil {
		d.client.Close()
	}
	if d.cmd != nil && d.cmd.Process != nil && d.exited != nil {
		if err := terminate(d.cmd.Process, d.exited); err != nil {
			errs = append(errs, fmt.Errorf("%s daemon: %w", d.kind, err))
		}
	}
	if d.diffd != nil {
		if err := d.diffd.stop(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// stop ends layerdiff-diffd with SIGTERM and checks it shut down cleanly: exit status 0,
// socket removed.
func (dd *diffd) stop() error {
	if dd.cmd == nil || dd.cmd.Process == nil || dd.exited == nil {
		return nil
	}
	if err := terminate(dd.cmd.Process, dd.exited); err != nil {
		return fmt.Errorf("layerdiff-diffd: %w", err)
	}
	if code := dd.cmd.ProcessState.ExitCode(); code != 0 {
		return fmt.Errorf("layerdiff-diffd exited with status %d after SIGTERM\n%s", code, tail(dd.log, 20))
	}
	if _, err := os.Lstat(dd.address); !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("layerdiff-diffd left its socket %s behind (%v)", dd.address, err)
	}
	return nil
}

func terminate(p *os.Process, exited chan struct{}) error {
	select {
	case <-exited:
		return nil
	default:
	}
	if err := p.Signal(unix.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	select {
	case <-exited:
		return nil
	case <-time.After(30 * time.Second):
		_ = p.Kill()
		<-exited
		return fmt.Errorf("pid %d still running 30 s after SIGTERM, killed", p.Pid)
	}
}

func waitFor(limit time.Duration, exited chan struct{}, ready func() bool) error {
	deadline := time.Now().Add(limit)
	for !ready() {
		select {
		case <-exited:
			return errors.New("exited")
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %v", limit)
		}
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// tail returns the last n lines of a log file, for failure messages.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return path + ":\n" + strings.Join(lines, "\n")
}

// ctr runs the stock ctr against d in namespace ns; it returns stdout and stderr apart.
func (d *daemon) ctr(ns string, args ...string) (stdout, stderr string, err error) {
	cmd := exec.Command(filepath.Join(env.bins, "ctr"), append([]string{"--address", d.address, "--namespace", ns}, args...)...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

func (d *daemon) ctx(ns string) context.Context {
	return namespaces.WithNamespace(context.Background(), ns)
}

// counters reads the layerdiff counters from d's metrics endpoint: "applies/ok" -> n.
func (d *daemon) counters(t testing.TB) map[string]int {
	t.Helper()
	resp, err := http.Get("http://" + d.metrics + "/v1/metrics")
	if err != nil {
		t.Fatalf("%s metrics: %v", d.kind, err)
	}
	defer resp.Body.Close()
	out := map[string]int{}
	re := regexp.MustCompile(`^containerd_layerdiff_(applies|compares)_total\{result="([a-z_]+)"\} ([0-9]+)$`)
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			n, _ := strconv.Atoi(m[3])
			out[m[1]+"/"+m[2]] = n
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("%s metrics: %v", d.kind, err)
	}
	return out
}

// delta is what changed between two counter readings.
func delta(before, after map[string]int) map[string]int {
	out := map[string]int{}
	for k, v := range after {
		if v != before[k] {
			out[k] = v - before[k]
		}
	}
	return out
}

// logCount counts lines of d's containerd log (and diffd's) containing s.
func (d *daemon) logCount(s string) int {
	n := 0
	for _, p := range []string{d.log, d.diffdLog()} {
		if p == "" {
			continue
		}
		b, _ := os.ReadFile(p)
		n += bytes.Count(b, []byte(s))
	}
	return n
}

func (d *daemon) diffdLog() string {
	if d.diffd == nil {
		return ""
	}
	return d.diffd.log
}

// mountsUnder lists the mount points under dir (deepest first).
func mountsUnder(dir string) ([]string, error) {
	infos, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range infos {
		if m.Mountpoint != dir {
			out = append(out, m.Mountpoint)
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(out)))
	return out, nil
}

// binaryKey identifies the sources of the daemons and tools the tests build: the Go
// toolchain, every non-test Go file, go.mod and go.sum of the layerdiff modules, and the
// installed library.
func binaryKey(goRoot, pcPath string) (string, error) {
	h := sha256.New()
	fmt.Fprintln(h, runtime.Version())
	err := filepath.WalkDir(goRoot, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := de.Name()
		if de.IsDir() || strings.HasSuffix(name, "_test.go") {
			return nil
		}
		if !strings.HasSuffix(name, ".go") && name != "go.sum" && name != "go.mod" {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		fmt.Fprintf(h, "%s\n", p)
		_, err = io.Copy(h, f)
		return err
	})
	if err != nil {
		return "", err
	}
	lib := filepath.Join(filepath.Dir(pcPath), "..", "liblayerdiff.a")
	f, err := os.Open(lib)
	if err != nil {
		return "", fmt.Errorf("the installed library (make install): %w", err)
	}
	defer f.Close()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// buildBinaries builds the stock containerd and ctr (pinned by go.mod's tool directives),
// containerd with the layerdiff plugin, and layerdiff-diffd into dir.
func buildBinaries(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	cmd := exec.Command("go", "build", "-o", dir+"/",
		"github.com/containerd/containerd/v2/cmd/containerd",
		"github.com/containerd/containerd/v2/cmd/ctr",
		"./cmd/containerd-layerdiff",
		"github.com/layerdiff/layerdiff/go/cmd/layerdiff-diffd")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	return cmd.Run()
}
