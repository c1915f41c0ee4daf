// Package daemondiffer is the differ both ways into a daemon serve (the go/plugin diff plugin
// and layerdiff-diffd): layerdiff, with containerd's own applier behind it, counted and
// logged so a user can check that layerdiff, not containerd's walking differ, unpacked their
// layers.
//
// An apply layerdiff hands back as not implemented (a media type no stream processor turns
// into a tar) goes to containerd's applier in the same process, as the walking differ would
// apply it: the transfer service calls its unpack differ directly, without the diff
// service's fallback, and turns a not-implemented error into a misleading "method Transfer
// not implemented"; this way every path gives the walking differ's result and error.
// A compare handed back as not implemented (an unsupported media type) stays so, exactly as
// the walking differ answers, and the diff service tries its next differ.
//
// Counters (Prometheus, on containerd's metrics endpoint for the plugin, on
// --metrics-address for layerdiff-diffd):
//
//	containerd_layerdiff_applies_total{result="ok|fallback|error"}
//	containerd_layerdiff_compares_total{result="ok|not_implemented|error"}
package daemondiffer

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
	ResultFallback       = "fallback"
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
	applies = ns.NewLabeledCounter("applies", "layers the layerdiff differ was asked to apply, by result (fallback: applied by containerd's applier)", "result")
	compares = ns.NewLabeledCounter("compares", "diffs the layerdiff differ was asked to create, by result", "result")
	metrics.Register(ns)
}

// Differ is a comparer and applier, as the diff service and the transfer service need.
type Differ interface {
	diff.Comparer
	diff.Applier
}

// New returns ours, counted, with fallback (containerd's applier over the same content
// store and mount manager) applying what ours does not.
func New(ours Differ, fallback diff.Applier) Differ { return counted{ours, fallback} }

type counted struct {
	ours     Differ
	fallback diff.Applier
}

func (c counted) Apply(ctx context.Context, desc ocispec.Descriptor, mounts []mount.Mount, opts ...diff.ApplyOpt) (ocispec.Descriptor, error) {
	applied, err := c.ours.Apply(ctx, desc, mounts, opts...)
	switch {
	case err == nil:
		applies.WithValues(ResultOK).Inc()
	case errdefs.IsNotImplemented(err):
		// layerdiff's Apply answers not implemented only before it has touched the mounts.
		applies.WithValues(ResultFallback).Inc()
		log.G(ctx).WithFields(log.Fields{"digest": desc.Digest, "media": desc.MediaType}).WithError(err).
			Debug("layerdiff does not apply this layer; containerd's applier (walking) does")
		return c.fallback.Apply(ctx, desc, mounts, opts...)
	default:
		applies.WithValues(ResultError).Inc()
	}
	return applied, err
}

func (c counted) Compare(ctx context.Context, lower, upper []mount.Mount, opts ...diff.Opt) (ocispec.Descriptor, error) {
	created, err := c.ours.Compare(ctx, lower, upper, opts...)
	switch {
	case err == nil:
		compares.WithValues(ResultOK).Inc()
	case errdefs.IsNotImplemented(err):
		compares.WithValues(ResultNotImplemented).Inc()
		log.G(ctx).WithError(err).Debug("layerdiff does not create this diff; the diff service tries its next differ")
	default:
		compares.WithValues(ResultError).Inc()
	}
	return created, err
}
