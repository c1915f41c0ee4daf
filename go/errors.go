package layerdiff

import (
	"context"
	"errors"
	"fmt"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// ErrorKind is the core's stable error kind (LAYERDIFF_ERROR_* in the C header).
type ErrorKind uint32

const (
	KindInvalidArgument ErrorKind = 1
	KindNotFound        ErrorKind = 2
	KindNotImplemented  ErrorKind = 3
	KindInvalidArchive  ErrorKind = 4
	KindCanceled        ErrorKind = 5
	KindIO              ErrorKind = 6
	KindInternal        ErrorKind = 7
)

func (k ErrorKind) String() string {
	switch k {
	case KindInvalidArgument:
		return "invalid argument"
	case KindNotFound:
		return "not found"
	case KindNotImplemented:
		return "not implemented"
	case KindInvalidArchive:
		return "invalid archive"
	case KindCanceled:
		return "canceled"
	case KindIO:
		return "i/o error"
	case KindInternal:
		return "internal error"
	}
	return fmt.Sprintf("error kind %d", uint32(k))
}

// ErrInvalidArchive matches errors about a malformed or hostile layer stream; it is itself of
// the class errdefs.ErrInvalidArgument, as containerd reports such errors.
var ErrInvalidArchive error = &invalidArchive{}

type invalidArchive struct{}

func (*invalidArchive) Error() string { return "invalid archive" }
func (*invalidArchive) Unwrap() error { return errdefs.ErrInvalidArgument }

// Error is an error of the core. It matches (errors.Is) the errdefs class of its kind (which
// errdefs.Resolve and errgrpc find through Unwrap), ErrInvalidArchive, its errno when a system
// call failed, and ctx.Err() when a context ended the call.
//
// One error, one chain: a second chain (Unwrap() []error) would reach a gRPC client as a
// second line (errgrpc sends the extra errors as details, which ToNative joins).
type Error struct {
	Op      string // "compare", "compare upperdir" or "apply"
	Kind    ErrorKind
	Errno   unix.Errno // 0 when none
	Message string     // the core's whole cause chain
	cause   error      // ctx.Err() for a cancellation caused by the context
}

func (e *Error) Error() string {
	return "layerdiff " + e.Op + ": " + e.Message
}

// Unwrap returns the error's class: an errdefs error, ErrInvalidArchive, or the context's
// error; nil for I/O errors (class unknown, as an errno is to containerd).
func (e *Error) Unwrap() error {
	switch e.Kind {
	case KindInvalidArgument:
		return errdefs.ErrInvalidArgument
	case KindNotFound:
		return errdefs.ErrNotFound
	case KindNotImplemented:
		return errdefs.ErrNotImplemented
	case KindInvalidArchive:
		return ErrInvalidArchive
	case KindCanceled:
		if e.cause != nil {
			return e.cause
		}
		return context.Canceled
	case KindInternal:
		return errdefs.ErrInternal
	}
	return nil
}

// Is matches the errno (errors.Is(err, unix.ENOSPC)); the class is matched through Unwrap.
func (e *Error) Is(target error) bool {
	errno, ok := target.(unix.Errno)
	return ok && e.Errno != 0 && errno == e.Errno
}

// As fills a *unix.Errno with the errno, when there is one.
func (e *Error) As(target any) bool {
	if p, ok := target.(*unix.Errno); ok && e.Errno != 0 {
		*p = e.Errno
		return true
	}
	return false
}

// withClass puts err in an errdefs class it does not carry itself. errors.Is and errors.As see
// both; the chain that errdefs.Resolve and errgrpc follow holds only the class, so the error
// stays one line through gRPC (unlike fmt.Errorf("%w: %w")).
func withClass(err, class error) error {
	return &classified{err: err, class: class}
}

type classified struct{ err, class error }

func (c *classified) Error() string        { return c.err.Error() + ": " + c.class.Error() }
func (c *classified) Unwrap() error        { return c.class }
func (c *classified) Is(target error) bool { return errors.Is(c.err, target) }
func (c *classified) As(target any) bool   { return errors.As(c.err, target) }
