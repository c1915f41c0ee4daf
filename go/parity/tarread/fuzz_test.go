package tarread

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/archive/compression"

	"github.com/layerdiff/layerdiff/go/internal/testkit"
)

// FuzzTarHeaders: for any input bytes (tar, gzip or zstd, decompressed as containerd does),
// the headers `layerdiff ls --json` lists are the ones Go's archive/tar yields, field by
// field as far as ls prints them (see lsFields: name, type, size, link, mode, owners, mtime,
// atime, device numbers, xattr names), and ls fails exactly where Go's reader does (at the
// same entry, or in the bytes after the archive, which both read to the end), never crashing
// or hanging. Go's header fields ls does not print (uname, gname, ctime, xattr values, other
// PAX records, the sparse map) are not compared; apply's parity covers the effect of each.
//
//	go test -run '^$' -fuzz '^FuzzTarHeaders$' -fuzztime 5m -parallel 1 ./parity/tarread
//
// Seeds: testdata/fuzz/FuzzTarHeaders (written by parity/hostile's TestWriteFuzzSeeds).
func FuzzTarHeaders(f *testing.F) {
	bin := testkit.LayerdiffBin(f)
	if msg := lsMissing(bin); msg != "" {
		f.Skipf("SKIPPED LOUDLY: %s: FuzzTarHeaders needs `layerdiff ls --json LAYER` "+
			"(one JSON object per entry; being added on branch wt-cli)", msg)
	}
	f.Fuzz(func(t *testing.T, layer []byte) {
		want := readWithGo(layer)
		path := filepath.Join(t.TempDir(), "layer")
		if err := os.WriteFile(path, layer, 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := listOurs(bin, path)
		if errors.Is(err, errLsBroke) {
			t.Fatalf("%v\nGo's reader: %s", err, want)
		}
		problems := compareListings(want, got, err)
		if len(problems) == 0 {
			return
		}
		t.Fatalf("%s\nGo's reader: %s\nlayerdiff ls: %d entries, error %v", strings.Join(problems, "\n"), want, len(got), err)
	})
}

const (
	// One input's budget: Go's fuzzing engine kills a worker after 10 s on one input.
	lsHangAfter = 5 * time.Second
	// Bytes after the archive Go's side decompresses (a bomb is not explored).
	maxTrailing = 64 << 20
)

// ---------------------------------------------------------------------------------------------
// Go's side.

// goListing is what Go's reader made of an input.
type goListing struct {
	headers []tar.Header
	// err is where it stopped: nil at a clean end (the stream read to its end).
	err error
}

func (g goListing) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d entries, error %v", len(g.headers), g.err)
	for i, h := range g.headers {
		if i == 20 {
			b.WriteString("\n  ...")
			break
		}
		fmt.Fprintf(&b, "\n  %2d: %s", i, describe(goFields(&h)))
	}
	return b.String()
}

// readWithGo reads the input as `ls` is defined to: containerd's decompressor, Go's
// archive/tar header by header (data skipped, as Next does), then the stream to its end, as
// containerd's applier reads it (a corrupt compressed trailer fails the apply).
func readWithGo(layer []byte) goListing {
	var g goListing
	ds, err := compression.DecompressStream(bytes.NewReader(layer))
	if err != nil {
		g.err = err
		return g
	}
	defer ds.Close()
	tr := tar.NewReader(ds)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			if _, err := io.Copy(io.Discard, io.LimitReader(ds, maxTrailing)); err != nil {
				g.err = err
			}
			return g
		}
		if err != nil {
			g.err = err
			return g
		}
		g.headers = append(g.headers, *h)
	}
}

// ---------------------------------------------------------------------------------------------
// Our side: `layerdiff ls --json LAYER`, one JSON object per entry on stdout.

// lsEntry is one line of ls output, field by field, as printed.
type lsEntry map[string]json.RawMessage

var errLsBroke = errors.New("layerdiff ls broke")

// lsMissing says why the CLI cannot list layers ("" when `layerdiff ls --help` works).
func lsMissing(bin string) string {
	out, err := exec.Command(bin, "ls", "--help").CombinedOutput()
	if err != nil {
		line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		return fmt.Sprintf("%s has no ls subcommand (%v: %s)", bin, err, line)
	}
	return ""
}

// listOurs runs ls; it returns the entries printed and the failure (nil on exit 0). A crash,
// a hang, a failure with nothing on stderr or a line that is not a JSON object is errLsBroke.
func listOurs(bin, path string) ([]lsEntry, error) {
	ctx, cancel := context.WithTimeout(context.Background(), lsHangAfter)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "ls", "--json", path)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	if ctx.Err() != nil {
		return nil, fmt.Errorf("%w: hung (killed after %v)", errLsBroke, lsHangAfter)
	}
	var out []lsEntry
	sc := bufio.NewScanner(&stdout)
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		var e lsEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return out, fmt.Errorf("%w: output line %d is not a JSON object (%v): %.200q", errLsBroke, len(out)+1, err, sc.Text())
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		return out, fmt.Errorf("%w: reading its output: %v", errLsBroke, err)
	}
	msg := strings.TrimSpace(stderr.String())
	if runErr != nil {
		if ee := (*exec.ExitError)(nil); errors.As(runErr, &ee) && ee.ExitCode() < 0 {
			return out, fmt.Errorf("%w: crashed (%v): %s", errLsBroke, runErr, msg)
		}
		if msg == "" {
			return out, fmt.Errorf("%w: %v with nothing on stderr", errLsBroke, runErr)
		}
		return out, fmt.Errorf("%v: %s", runErr, msg)
	}
	return out, nil
}

// ---------------------------------------------------------------------------------------------
// Comparison, field by field as far as ls prints them.

// A field is compared in a canonical form: the Go side computes it from the header, the ls
// side from the first of its JSON keys that ls printed.
type lsField struct {
	name string
	keys []lsKey
}

type lsKey struct {
	key string
	// decode turns the printed value into the canonical form; false: not comparable.
	decode func(raw json.RawMessage) (string, bool)
}

// lsFields: what `layerdiff ls --json` prints (its --help describes the fields). A name, link
// or xattr name that is not UTF-8 is printed lossily and, exactly, in base64: the exact form
// is compared.
var lsFields = []lsField{
	{"name", []lsKey{{"nameBase64", jsonBase64}, {"name", jsonString}}},
	{"type", []lsKey{{"typeflag", jsonString}}},
	{"size", []lsKey{{"size", jsonInt}}},
	{"link", []lsKey{{"linkBase64", jsonBase64}, {"link", jsonString}}},
	{"mode", []lsKey{{"mode", jsonMode}}},
	{"uid", []lsKey{{"uid", jsonInt}}},
	{"gid", []lsKey{{"gid", jsonInt}}},
	{"mtime", []lsKey{{"mtime", jsonTime}}},
	{"atime", []lsKey{{"atime", jsonTime}}},
	{"devmajor", []lsKey{{"devmajor", jsonInt}}},
	{"devminor", []lsKey{{"devminor", jsonInt}}},
	{"xattrs", []lsKey{{"xattrsBase64", jsonBase64Names}, {"xattrs", jsonNames}}},
}

// lsOmits are fields ls prints only when they are not empty or zero (Go's form here).
var lsOmits = map[string]string{"link": "", "atime": "", "xattrs": "[]"}

// goFields is the canonical form of every compared field of a Go header.
func goFields(h *tar.Header) map[string]string {
	var xattrs []string
	for k := range h.PAXRecords {
		if name, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
			xattrs = append(xattrs, name)
		}
	}
	m := map[string]string{
		"name":   h.Name,
		"type":   string(rune(h.Typeflag)),
		"size":   strconv.FormatInt(h.Size, 10),
		"link":   h.Linkname,
		"mode":   strconv.FormatInt(h.Mode, 8),
		"uid":    strconv.Itoa(h.Uid),
		"gid":    strconv.Itoa(h.Gid),
		"mtime":  goTime(h.ModTime),
		"atime":  goTime(h.AccessTime),
		"xattrs": canonicalNames(xattrs),
	}
	// Go's reader returns a global header with its name, type and PAX records only.
	if h.Typeflag == tar.TypeXGlobalHeader {
		return map[string]string{"name": h.Name, "type": m["type"], "xattrs": m["xattrs"]}
	}
	// ls prints device numbers for char and block devices only.
	if h.Typeflag == tar.TypeChar || h.Typeflag == tar.TypeBlock {
		m["devmajor"] = strconv.FormatInt(h.Devmajor, 10)
		m["devminor"] = strconv.FormatInt(h.Devminor, 10)
	}
	return m
}

// compareListings lists every difference between Go's listing and ls's.
func compareListings(want goListing, got []lsEntry, lsErr error) []string {
	var problems []string
	for i := 0; i < len(want.headers) && i < len(got); i++ {
		w := goFields(&want.headers[i])
		global := want.headers[i].Typeflag == tar.TypeXGlobalHeader
		for _, f := range lsFields {
			v, key, printed := decodeField(got[i], f)
			wv, known := w[f.name]
			switch {
			case global && !known: // not in Go's header: nothing to compare with
			case !printed && !known:
			case !printed && lsOmits[f.name] == wv:
			case !printed:
				problems = append(problems, fmt.Sprintf("entry %d (%.80q): %s: Go %.200q, ls prints none", i, want.headers[i].Name, f.name, wv))
			case !known:
				problems = append(problems, fmt.Sprintf("entry %d (%.80q): %s: Go has none, ls %s %.200q", i, want.headers[i].Name, f.name, key, v))
			case v != wv:
				problems = append(problems, fmt.Sprintf("entry %d (%.80q): %s: Go %.200q, ls %s %.200q", i, want.headers[i].Name, f.name, wv, key, v))
			}
		}
	}
	// When the compressed stream is corrupt, both fail, but how many entries come out first
	// depends on how far ahead each decoder reads before it notices; apply gives no promise
	// about a partly applied layer either.
	corruptStream := want.err != nil && lsErr != nil && strings.Contains(lsErr.Error(), "decompress layer: ")
	if len(want.headers) != len(got) && !corruptStream {
		problems = append(problems, fmt.Sprintf("Go's reader yields %d entries, ls %d", len(want.headers), len(got)))
	}
	switch {
	case want.err == nil && lsErr != nil:
		problems = append(problems, fmt.Sprintf("Go's reader reads it all, ls fails: %v", lsErr))
	case want.err != nil && lsErr == nil:
		problems = append(problems, fmt.Sprintf("Go's reader fails (%v), ls reads it all", want.err))
	}
	return problems
}

// decodeField is the canonical form of f as ls printed it, and under which key.
func decodeField(e lsEntry, f lsField) (string, string, bool) {
	for _, k := range f.keys {
		raw, ok := e[k.key]
		if !ok {
			continue
		}
		v, ok := k.decode(raw)
		if !ok {
			return fmt.Sprintf("<undecodable %s>", raw), k.key, true
		}
		return v, k.key, true
	}
	return "", "", false
}

func describe(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k, v := range m {
		if v != "" && v != "{}" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%.100q ", k, m[k])
	}
	return b.String()
}

// goTime: nanoseconds since the epoch; "" for Go's zero time (no such field in the header).
func goTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return strconv.FormatInt(t.Unix(), 10) + "." + fmt.Sprintf("%09d", t.Nanosecond())
}

// canonicalNames: a sorted JSON array.
func canonicalNames(names []string) string {
	if names == nil {
		names = []string{}
	}
	sort.Strings(names)
	b, _ := json.Marshal(names)
	return string(b)
}

func jsonString(raw json.RawMessage) (string, bool) {
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

func jsonInt(raw json.RawMessage) (string, bool) {
	var n json.Number
	if json.Unmarshal(raw, &n) != nil {
		return "", false
	}
	if _, err := n.Int64(); err != nil {
		return "", false
	}
	return n.String(), true
}

// jsonMode: a number, or a string of octal digits.
func jsonMode(raw json.RawMessage) (string, bool) {
	if s, ok := jsonString(raw); ok {
		n, err := strconv.ParseInt(strings.TrimPrefix(s, "0o"), 8, 64)
		return strconv.FormatInt(n, 8), err == nil
	}
	var n int64
	if json.Unmarshal(raw, &n) != nil {
		return "", false
	}
	return strconv.FormatInt(n, 8), true
}

// jsonTime: decimal seconds since 1970 in a string, with up to nine digits of fraction (a
// PAX time record's form); canonical as goTime.
func jsonTime(raw json.RawMessage) (string, bool) {
	s, ok := jsonString(raw)
	if !ok {
		return "", false
	}
	sec, frac, _ := strings.Cut(s, ".")
	secs, err := strconv.ParseInt(sec, 10, 64)
	if err != nil || len(frac) > 9 || strings.Trim(frac, "0123456789") != "" {
		return "", false
	}
	ns, _ := strconv.ParseInt((frac + "000000000")[:9], 10, 64)
	if strings.HasPrefix(sec, "-") {
		ns = -ns
	}
	return goTime(time.Unix(secs, ns)), true
}

func jsonBase64(raw json.RawMessage) (string, bool) {
	s, ok := jsonString(raw)
	if !ok {
		return "", false
	}
	b, err := base64.StdEncoding.DecodeString(s)
	return string(b), err == nil
}

// jsonNames: an array of strings, canonical as canonicalNames.
func jsonNames(raw json.RawMessage) (string, bool) {
	var names []string
	if json.Unmarshal(raw, &names) != nil {
		return "", false
	}
	return canonicalNames(names), true
}

func jsonBase64Names(raw json.RawMessage) (string, bool) {
	var enc []string
	if json.Unmarshal(raw, &enc) != nil {
		return "", false
	}
	names := make([]string, len(enc))
	for i, e := range enc {
		b, err := base64.StdEncoding.DecodeString(e)
		if err != nil {
			return "", false
		}
		names[i] = string(b)
	}
	return canonicalNames(names), true
}
