package main

import (
	"context"
	"fmt"
	"runtime/debug"
	"time"

	diffapi "github.com/containerd/containerd/api/services/diff/v1"
	"github.com/containerd/containerd/v2/core/diff"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/grpc"

	"github.com/layerdiff/layerdiff/go/internal/daemondiffer"
)

// diffServer serves containerd.services.diff.v1.Diff with one differ. It maps requests onto
// the differ's options exactly as containerd's own diff service does (plugins/services/diff,
// local.Apply and local.Diff), so containerd's proxy client (core/diff/proxy) sees the same
// service whether the differ runs inside the daemon or here.
type diffServer struct {
	diffapi.UnimplementedDiffServer
	differ daemondiffer.Differ
	// leases and blobLease: see Diff.
	leases    leases.Manager
	blobLease time.Duration
}

var _ diffapi.DiffServer = (*diffServer)(nil)

// Apply is local.Apply of containerd's diff service, with one differ. SyncFs arrives already
// forced by the daemon's own sync_fs setting.
func (s *diffServer) Apply(ctx context.Context, req *diffapi.ApplyRequest) (*diffapi.ApplyResponse, error) {
	ctx, err := requestContext(ctx)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	if req.GetDiff() == nil {
		return nil, errgrpc.ToGRPC(fmt.Errorf("apply request without a diff descriptor: %w", errdefs.ErrInvalidArgument))
	}
	desc := oci.DescriptorFromProto(req.Diff)
	mounts := mount.FromProto(req.Mounts)

	var opts []diff.ApplyOpt
	if req.Payloads != nil {
		payloads := make(map[string]typeurl.Any, len(req.Payloads))
		for k, v := range req.Payloads {
			payloads[k] = v
		}
		opts = append(opts, diff.WithPayloads(payloads))
	}
	opts = append(opts, diff.WithSyncFs(req.SyncFs))

	applied, err := s.differ.Apply(ctx, desc, mounts, opts...)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	return &diffapi.ApplyResponse{Applied: oci.DescriptorToProto(applied)}, nil
}

// Diff is local.Diff of containerd's diff service, with one differ. The blob it writes must
// outlive the request until the client references it: inside the daemon the client's lease
// holds it, but containerd's proxy client does not pass the lease on (only the namespace),
// so a request without one gets a lease of its own that expires after blobLease.
func (s *diffServer) Diff(ctx context.Context, req *diffapi.DiffRequest) (_ *diffapi.DiffResponse, err error) {
	ctx, err = requestContext(ctx)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	if _, ok := leases.FromContext(ctx); !ok && s.leases != nil {
		l, lerr := s.leases.Create(ctx, leases.WithRandomID(), leases.WithExpiration(s.blobLease),
			leases.WithLabel("layerdiff.io/diffd", "blob written for a request without a lease"))
		if lerr != nil {
			return nil, errgrpc.ToGRPC(fmt.Errorf("creating a lease for the diff: %w", lerr))
		}
		ctx = leases.WithLease(ctx, l.ID)
		log.G(ctx).WithField("lease", l.ID).Debug("diff written under a lease of its own")
		defer func() {
			if err != nil { // no blob to hold
				if derr := s.leases.Delete(context.WithoutCancel(ctx), l); derr != nil {
					log.G(ctx).WithError(derr).WithField("lease", l.ID).Warn("deleting the lease of a failed diff")
				}
			}
		}()
	}
	var opts []diff.Opt
	if req.MediaType != "" {
		opts = append(opts, diff.WithMediaType(req.MediaType))
	}
	if req.Ref != "" {
		opts = append(opts, diff.WithReference(req.Ref))
	}
	if req.Labels != nil {
		opts = append(opts, diff.WithLabels(req.Labels))
	}
	if req.SourceDateEpoch != nil {
		tm := req.SourceDateEpoch.AsTime()
		opts = append(opts, diff.WithSourceDateEpoch(&tm))
	}

	created, err := s.differ.Compare(ctx, mount.FromProto(req.Left), mount.FromProto(req.Right), opts...)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	return &diffapi.DiffResponse{Diff: oci.DescriptorToProto(created)}, nil
}

// requestContext carries the request's namespace (required, as for every containerd service)
// and lease, both read from the incoming gRPC metadata, on to the outgoing calls to the
// content store (what containerd's own grpc server does for the namespace in
// plugins/server/grpc's namespace interceptor).
func requestContext(ctx context.Context) (context.Context, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return ctx, err
	}
	ctx = namespaces.WithNamespace(ctx, ns)
	fields := log.Fields{"namespace": ns}
	if lease, ok := leases.FromContext(ctx); ok {
		ctx = leases.WithLease(ctx, lease)
		fields["lease"] = lease
	}
	return log.WithLogger(ctx, log.G(ctx).WithFields(fields)), nil
}

// recoverUnary turns a panicking request into an Internal error, so one bad request cannot
// take the differ away from the daemon.
func recoverUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	defer func() {
		if r := recover(); r != nil {
			log.G(ctx).WithField("method", info.FullMethod).Errorf("panic: %v\n%s", r, debug.Stack())
			err = errgrpc.ToGRPC(fmt.Errorf("%s: panic: %v: %w", info.FullMethod, r, errdefs.ErrInternal))
		}
	}()
	return handler(ctx, req)
}
