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

// ErrInvalidArchive matches errors about a malformed or hostile layer stream; such errors
// also match errdefs.ErrInvalidArgument, as containerd reports them.
var ErrInvalidArchive = errors.New("invalid archive")

// Error is an error of the core. It matches (errors.Is) the errdefs class of its kind,
// its errno when a system call failed, and ctx.Err() when a context ended the call.
type Error struct {
	Op      string // "compare" or "apply"
	Kind    ErrorKind
	Errno   unix.Errno // 0 when none
	Message string     // the core's whole cause chain
	cause   error      // ctx.Err() for a cancellation caused by the context
}

func (e *Error) Error() string {
	return "layerdiff " + e.Op + ": " + e.Message
}

// Unwrap lists what the error matches: the errdefs class, the errno, the context's error.
func (e *Error) Unwrap() []error {
	var errs []error
	switch e.Kind {
	case KindInvalidArgument:
		errs = append(errs, errdefs.ErrInvalidArgument)
	case KindNotFound:
		errs = append(errs, errdefs.ErrNotFound)
	case KindNotImplemented:
		errs = append(errs, errdefs.ErrNotImplemented)
	case KindInvalidArchive:
		errs = append(errs, ErrInvalidArchive, errdefs.ErrInvalidArgument)
	case KindCanceled:
		if e.cause == nil {
			errs = append(errs, context.Canceled)
		}
	case KindInternal:
		errs = append(errs, errdefs.ErrInternal)
	}
	if e.Errno != 0 {
		errs = append(errs, e.Errno)
	}
	if e.cause != nil {
		errs = append(errs, e.cause)
	}
	return errs
}
