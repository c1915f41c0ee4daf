package layerdiff

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/diff"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"golang.org/x/sys/unix"
)

// TestErrorsOneLineThroughGRPC: our errors keep their errdefs class (locally, and on the
// other side of a gRPC hop as containerd's services and clients map them with errgrpc) and
// stay one line there: no second chain that errgrpc would send as a detail and the client
// would join as a second line.
func TestErrorsOneLineThroughGRPC(t *testing.T) {
	canceled := &Error{Op: "apply", Kind: KindCanceled, Message: "canceled", cause: context.DeadlineExceeded}
	for _, c := range []struct {
		err   error
		class error // errdefs.Resolve, on both sides of the hop
		also  []error
	}{
		{&Error{Op: "apply", Kind: KindInvalidArchive, Message: "invalid archive: bad header"}, errdefs.ErrInvalidArgument, []error{ErrInvalidArchive}},
		{&Error{Op: "apply", Kind: KindInvalidArgument, Message: "bad option"}, errdefs.ErrInvalidArgument, nil},
		{&Error{Op: "compare", Kind: KindNotFound, Errno: unix.ENOENT, Message: "open lower: no such file"}, errdefs.ErrNotFound, []error{unix.ENOENT}},
		{&Error{Op: "apply", Kind: KindNotImplemented, Message: "not supported"}, errdefs.ErrNotImplemented, nil},
		{&Error{Op: "apply", Kind: KindInternal, Message: "bug"}, errdefs.ErrInternal, nil},
		{&Error{Op: "apply", Kind: KindIO, Errno: unix.ENOSPC, Message: "write: no space left"}, errdefs.ErrUnknown, []error{unix.ENOSPC}},
		{canceled, context.DeadlineExceeded, nil},
		{fmt.Errorf("failed to apply: %w", withClass(diff.ErrNoProcessor, errdefs.ErrNotImplemented)), errdefs.ErrNotImplemented, []error{diff.ErrNoProcessor}},
		{fmt.Errorf("layer is gzip-compressed, not a tar: %w", ErrInvalidArchive), errdefs.ErrInvalidArgument, []error{ErrInvalidArchive}},
	} {
		t.Run(c.err.Error(), func(t *testing.T) {
			matches := c.also
			if c.class != errdefs.ErrUnknown { // unknown is what Resolve says of no class
				matches = append(matches, c.class)
			}
			for _, want := range matches {
				if !errors.Is(c.err, want) {
					t.Errorf("locally: not errors.Is %v", want)
				}
			}
			if got := errdefs.Resolve(c.err); got != c.class {
				t.Errorf("locally: errdefs.Resolve = %v, want %v", got, c.class)
			}
			remote := errgrpc.ToNative(errgrpc.ToGRPC(c.err))
			if msg := remote.Error(); strings.Contains(msg, "\n") {
				t.Errorf("through gRPC: %d lines:\n%s", strings.Count(msg, "\n")+1, msg)
			} else if !strings.HasPrefix(msg, c.err.Error()) {
				t.Errorf("through gRPC: %q, want it to start with %q", msg, c.err.Error())
			}
			if got := errdefs.Resolve(remote); got != c.class {
				t.Errorf("through gRPC: errdefs.Resolve = %v, want %v", got, c.class)
			}
		})
	}
	var errno unix.Errno
	if !errors.As(&Error{Kind: KindIO, Errno: unix.EIO}, &errno) || errno != unix.EIO {
		t.Errorf("errors.As into unix.Errno: %v", errno)
	}
}
