// Package instrument counts and logs what the layerdiff differ did, for the two ways into a
// daemon (the go/plugin diff plugin and layerdiff-diffd), so a user can check that layerdiff,
// not containerd's walking differ, unpacked their layers.
//
// Counters (Prometheus, on containerd's metrics endpoint for the plugin, on
// --metrics-address for layerdiff-diffd):
//
//	containerd_layerdiff_applies_total{result="ok|not_implemented|error"}
//	containerd_layerdiff_compares_total{result="ok|not_implemented|error"}
//
// "not_implemented" is a request layerdiff handed back (errdefs.ErrNotImplemented), which
// containerd's diff service then passes to its next differ.
package instrument

import (
	"context"

	"github.com/containerd/containerd/v2/core/diff"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	metrics "github.com/docker/go-metrics"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Result label values.
const (
	ResultOK             = "ok"
	ResultNotImplemented = "not_implemented"
	ResultError          = "error"
)

var (
	applies  metrics.LabeledCounter
	compares metrics.LabeledCounter
)

func init() {
	// As containerd's own plugins do (plugins/gc, plugins/snapshots/erofs).
	ns := metrics.NewNamespace("containerd", "layerdiff", nil)
	applies = ns.NewLabeledCounter("applies", "layers the layerdiff differ was asked to apply, by result", "result")
	compares = ns.NewLabeledCounter("compares", "diffs the layerdiff differ was asked to create, by result", "result")
	metrics.Register(ns)
}

// Differ is the comparer and applier both daemon front doors serve.
type Differ interface {
	diff.Comparer
	diff.Applier
}

// Counted wraps d: every Apply and Compare is counted, and one handed back as not
// implemented is logged at debug level (success is logged by d itself).
func Counted(d Differ) Differ { return counted{d} }

type counted struct{ d Differ }

func (c counted) Apply(ctx context.Context, desc ocispec.Descriptor, mounts []mount.Mount, opts ...diff.ApplyOpt) (ocispec.Descriptor, error) {
	applied, err := c.d.Apply(ctx, desc, mounts, opts...)
	applies.WithValues(result(ctx, err, "apply", desc.MediaType)).Inc()
	return applied, err
}

func (c counted) Compare(ctx context.Context, lower, upper []mount.Mount, opts ...diff.Opt) (ocispec.Descriptor, error) {
	created, err := c.d.Compare(ctx, lower, upper, opts...)
	var config diff.Config
	for _, o := range opts {
		_ = o(&config) // only for the log line; the differ has reported a bad option
	}
	compares.WithValues(result(ctx, err, "compare", config.MediaType)).Inc()
	return created, err
}

func result(ctx context.Context, err error, op, mediaType string) string {
	switch {
	case err == nil:
		return ResultOK
	case errdefs.IsNotImplemented(err):
		log.G(ctx).WithFields(log.Fields{"op": op, "media": mediaType}).WithError(err).
			Debug("layerdiff does not handle this request; the diff service tries its next differ")
		return ResultNotImplemented
	default:
		return ResultError
	}
}
