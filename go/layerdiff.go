// Package layerdiff computes and applies OCI image layer diffs with the layerdiff Rust core,
// through its C ABI (include/layerdiff.h).
//
// Two levels:
//   - [Compare] and [Apply] take plain directories and an io.Writer / io.Reader: the core
//     walks and writes, Go only moves bytes between pipes and the caller.
//   - [Differ] implements containerd's diff.Comparer and diff.Applier over a content store,
//     with containerd's mounts, labels, options and stream processors (see differ.go).
//
// It links liblayerdiff.a through pkg-config (layerdiff-static.pc, installed by `make install`
// at the repository root), so programs need no liblayerdiff.so at run time; set
// PKG_CONFIG_PATH when the library is installed under a prefix pkg-config does not search.
package layerdiff

/*
#cgo pkg-config: layerdiff-static
#include <stdlib.h>
#include "layerdiff.h"

// Implemented in Go (progress_export.go).
extern void layerdiffGoProgress(void *ctx, uint64_t bytes);

// The progress context is a cgo.Handle (an integer), never a Go pointer; converting it in C
// keeps go vet's unsafe.Pointer check quiet.
static void *layerdiff_handle_ptr(uintptr_t handle) { return (void *)handle; }
static layerdiff_progress_fn layerdiff_go_progress_fn(void) { return layerdiffGoProgress; }
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/cgo"
	"strings"
	"sync"
	"time"
	"unsafe"

	digest "github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// Compression of the layer written by [Compare].
type Compression uint32

const (
	// CompressionGzip is the zero value, like containerd's walking differ.
	CompressionGzip Compression = C.LAYERDIFF_COMPRESSION_GZIP
	CompressionNone Compression = C.LAYERDIFF_COMPRESSION_NONE
	CompressionZstd Compression = C.LAYERDIFF_COMPRESSION_ZSTD
	// CompressionGzipISAL is gzip written by ISA-L's deflate (Level 1-3, 0 = 1): several times
	// faster, some 16% larger than gzip level 6; the media type is still tar+gzip.
	CompressionGzipISAL Compression = C.LAYERDIFF_COMPRESSION_GZIP_ISAL
)

// WhiteoutMode says how [Apply] turns whiteout entries into changes.
type WhiteoutMode uint32

const (
	// WhiteoutsRemove deletes what whiteouts name (the root is a plain directory).
	WhiteoutsRemove WhiteoutMode = C.LAYERDIFF_WHITEOUTS_REMOVE
	// WhiteoutsOverlay writes overlayfs whiteouts (the root is an overlay upperdir).
	WhiteoutsOverlay WhiteoutMode = C.LAYERDIFF_WHITEOUTS_OVERLAY
	// WhiteoutsAufs writes whiteouts as the .wh. files they are (the root is an aufs rw
	// branch), as containerd 1.x's AufsConvertWhiteout.
	WhiteoutsAufs WhiteoutMode = C.LAYERDIFF_WHITEOUTS_AUFS
)

// OverlayXattrs says which xattr namespace an overlay keeps its whiteouts and opaque
// directories in: what [WhiteoutsOverlay] writes, and what [CompareUpperdir] reads (where
// OverlayXattrsAuto means trusted, as how the overlay was mounted cannot be read off the
// upperdir).
type OverlayXattrs uint32

const (
	// OverlayXattrsAuto is user inside a user namespace, else trusted.
	OverlayXattrsAuto OverlayXattrs = C.LAYERDIFF_OVERLAY_XATTRS_AUTO
	// OverlayXattrsTrusted is trusted.overlay.* (a normal overlay mount).
	OverlayXattrsTrusted OverlayXattrs = C.LAYERDIFF_OVERLAY_XATTRS_TRUSTED
	// OverlayXattrsUser is user.overlay.* (an overlay mounted with userxattr: rootless).
	OverlayXattrsUser OverlayXattrs = C.LAYERDIFF_OVERLAY_XATTRS_USER
)

// OverlayWhiteout says how [WhiteoutsOverlay] writes the whiteout of a single name.
type OverlayWhiteout uint32

const (
	// OverlayWhiteoutAuto is a 0/0 character device, or an xattr whiteout where the kernel
	// refuses mknod of one.
	OverlayWhiteoutAuto OverlayWhiteout = C.LAYERDIFF_OVERLAY_WHITEOUT_AUTO
	// OverlayWhiteoutCharDevice is a 0/0 character device (read in upper and lower layers).
	OverlayWhiteoutCharDevice OverlayWhiteout = C.LAYERDIFF_OVERLAY_WHITEOUT_CHARDEV
	// OverlayWhiteoutXattr is a zero-size file with NS.overlay.whiteout in a directory marked
	// NS.overlay.opaque=x (kernel 6.7+; read in lower layers only).
	OverlayWhiteoutXattr OverlayWhiteout = C.LAYERDIFF_OVERLAY_WHITEOUT_XATTR
)

// DeviceNodes says what [Apply] does with block and character device entries.
type DeviceNodes uint32

const (
	// DevicesAuto is containerd's: skipped inside a user namespace, else created.
	DevicesAuto DeviceNodes = C.LAYERDIFF_DEVICES_AUTO
	// DevicesCreate always creates them; a refused mknod is an error.
	DevicesCreate DeviceNodes = C.LAYERDIFF_DEVICES_CREATE
	// DevicesSkip skips them where the kernel refuses to create them.
	DevicesSkip DeviceNodes = C.LAYERDIFF_DEVICES_SKIP
)

// CompareOptions configure [Compare]; the zero value is gzip at level 6, no epoch.
type CompareOptions struct {
	Compression Compression
	// Level of the compression; 0 = the algorithm's default (gzip 6, zstd 3).
	Level int
	// SourceDateEpoch clamps later mtimes to it (whiteouts keep 0); nil = no clamping.
	SourceDateEpoch *time.Time
	// Progress is called with the number of uncompressed tar bytes produced so far,
	// possibly from another thread. A panic in it cancels the compare.
	Progress func(bytes uint64)
	// IDMaps maps the owners on disk (host IDs) to those written (container IDs).
	IDMaps IDMaps
	// AllXattrs carries every xattr the caller can read (overlayfs's own trusted.overlay.*
	// and user.overlay.* excepted) as SCHILY.xattr.* records, not only security.capability.
	AllXattrs bool
}

// CompareResult describes what [Compare] wrote.
type CompareResult struct {
	MediaType string
	// Digest and Size of the bytes written to the writer.
	Digest digest.Digest
	Size   int64
	// DiffID and UncompressedSize of the uncompressed tar.
	DiffID           digest.Digest
	UncompressedSize int64
}

// ApplyOptions configure [Apply]; the zero value is containerd's archive.Apply defaults.
type ApplyOptions struct {
	Whiteouts WhiteoutMode
	// Parents are overlay lowerdirs or aufs ro branches, top first: a missing parent
	// directory takes its attributes from the first of them that has it.
	Parents []string
	// NoSameOwner skips the lchown to the layer's uid/gid.
	NoSameOwner bool
	// IgnoreChownErrors leaves an entry owned by the caller when the kernel refuses its
	// lchown (an ID not mapped in this user namespace) instead of failing.
	IgnoreChownErrors bool
	// Devices: what block and character device entries become.
	Devices DeviceNodes
	// OverlayXattrs and OverlayWhiteout: the forms overlay whiteouts take (rootless).
	OverlayXattrs   OverlayXattrs
	OverlayWhiteout OverlayWhiteout
	// SyncFs syncs the root's filesystem at the end.
	SyncFs bool
	// ExpectedDiffID, when set ("sha256:<64 lowercase hex>"), is the digest the uncompressed
	// stream must have: otherwise Apply fails with an error matching ErrInvalidArchive. That
	// is known only once the whole layer is read, so root may be partly written by then (as
	// with containerd's unpacker, which checks after applying). A malformed value fails with
	// errdefs.ErrInvalidArgument before anything is written. "" = no check.
	ExpectedDiffID digest.Digest
	// Progress is called with the number of input bytes consumed so far, possibly from
	// another thread. A panic in it cancels the apply.
	Progress func(bytes uint64)
	// IDMaps maps the layer's owners (container IDs) to those set on disk (host IDs).
	IDMaps IDMaps
	// UnpackThreads is the number of threads that make files: 0 = the default
	// ($LAYERDIFF_UNPACK_THREADS if set, else 1); 1 = one entry at a
	// time, as containerd; N > 1 = regular files made by N workers and committed in stream
	// order (the same tree and the same first error as 1).
	UnpackThreads uint32
}

// ApplyResult describes the uncompressed stream [Apply] read.
type ApplyResult struct {
	MediaType string
	Digest    digest.Digest
	Size      int64
}

// Version is the version of the linked core library.
func Version() string {
	return C.GoString(C.layerdiff_version())
}

// pipeSize is asked of the kernel for the pipes between Go and the core: larger pipes
// mean fewer context switches per megabyte.
const pipeSize = 1 << 20

// copyBufferSize is the buffer of the Go side of the pipe copies.
const copyBufferSize = 256 << 10

// Compare writes to w the layer that turns directory lower into directory upper
// (byte-identical, uncompressed, to containerd's archive.WriteDiff). Cancelling ctx stops
// the core promptly with an error matching context.Canceled. Compare returns only once no
// w.Write is under way (none is made after it returns): a w that blocks delays its return,
// also after a cancel or an error, as nothing can interrupt a Write.
func Compare(ctx context.Context, lower, upper string, w io.Writer, opts CompareOptions) (CompareResult, error) {
	cLower, cUpper := C.CString(lower), C.CString(upper)
	defer C.free(unsafe.Pointer(cLower))
	defer C.free(unsafe.Pointer(cUpper))
	return compareWith(ctx, "compare", w, opts, func(fd C.int, copts *C.layerdiff_compare_options, out *C.layerdiff_compare_result) *C.layerdiff_error {
		return C.layerdiff_compare(cLower, cUpper, fd, copts, out)
	})
}

// CompareUpperdir writes the layer [Compare](lower, merged) would write, where merged is an
// overlay of lower (the overlay's lower layers as one directory, e.g. a read-only mount of
// them) and upperdir, by walking only upperdir and looking up lower for the paths found
// there: the cost follows the change, not the base. upperdir must not change during the call
// (unmount the overlay or stop its writers). Where its meaning cannot be matched exactly
// (redirect_dir=on renames, metacopy, index=on, unknown overlay.* xattrs) the error has Kind
// KindNotImplemented (errdefs.IsNotImplemented), and nothing else is that kind: restart w
// and call Compare on the mounted views instead.
func CompareUpperdir(ctx context.Context, lower, upperdir string, xattrs OverlayXattrs, w io.Writer, opts CompareOptions) (CompareResult, error) {
	cLower, cUpperdir := C.CString(lower), C.CString(upperdir)
	defer C.free(unsafe.Pointer(cLower))
	defer C.free(unsafe.Pointer(cUpperdir))
	return compareWith(ctx, "compare upperdir", w, opts, func(fd C.int, copts *C.layerdiff_compare_options, out *C.layerdiff_compare_result) *C.layerdiff_error {
		return C.layerdiff_compare_upperdir(cLower, cUpperdir, C.uint32_t(xattrs), fd, copts, out)
	})
}

// compareWith runs one of the core's compare calls, given the write end of a pipe whose
// read end is copied to w.
func compareWith(ctx context.Context, op string, w io.Writer, opts CompareOptions,
	compare func(C.int, *C.layerdiff_compare_options, *C.layerdiff_compare_result) *C.layerdiff_error) (CompareResult, error) {
	if err := ctx.Err(); err != nil {
		return CompareResult{}, err
	}
	idMaps, err := newCIDMaps(opts.IDMaps)
	if err != nil {
		return CompareResult{}, err
	}
	defer idMaps.free()

	pr, pw, err := newPipe()
	if err != nil {
		return CompareResult{}, err
	}
	// The read end stays open until the core has returned: closing it early would raise
	// SIGPIPE on a core worker thread, which kills the process. When w fails, the copier
	// cancels the core and drains the pipe instead.
	defer pr.Close()

	call := newCall(ctx, opts.Progress)
	defer call.finish()

	var copyErr error
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		copyErr = drainTo(w, pr, call.handle)
	}()

	var copts C.layerdiff_compare_options
	copts.compression = C.uint32_t(opts.Compression)
	copts.level = C.int32_t(opts.Level)
	if opts.SourceDateEpoch != nil {
		copts.has_source_date_epoch = true
		copts.source_date_epoch = C.int64_t(opts.SourceDateEpoch.Unix())
	}
	copts.cancel = call.handle
	copts.progress, copts.progress_ctx = call.progressHooks()
	copts.id_maps = idMaps.c
	if opts.AllXattrs {
		copts.xattrs = C.LAYERDIFF_XATTRS_ALL
	}

	var out C.layerdiff_compare_result
	cerr := compare(C.int(pw.Fd()), &copts, &out)
	runtime.KeepAlive(pw)
	pw.Close()
	<-copied

	if err := call.err(); err != nil {
		freeError(cerr)
		return CompareResult{}, err
	}
	if copyErr != nil {
		freeError(cerr)
		return CompareResult{}, fmt.Errorf("layerdiff %s: writing the layer: %w", op, copyErr)
	}
	if cerr != nil {
		return CompareResult{}, call.wrapError(op, cerr)
	}
	return CompareResult{
		MediaType:        C.GoString(&out.media_type[0]),
		Digest:           digest.Digest(C.GoString(&out.digest[0])),
		Size:             int64(out.size),
		DiffID:           digest.Digest(C.GoString(&out.diff_id[0])),
		UncompressedSize: int64(out.uncompressed_size),
	}, nil
}

// Apply unpacks the layer read from r (tar, gzip or zstd: detected) onto directory root
// with containerd's archive.Apply semantics. Cancelling ctx stops the core promptly with an
// error matching context.Canceled, even while r blocks, and an error in the layer is
// returned as soon as the core meets it, also while r blocks (as containerd's applier); a
// Read of r already under way then finishes in the background (its data is dropped), as
// nothing can interrupt it.
func Apply(ctx context.Context, root string, r io.Reader, opts ApplyOptions) (ApplyResult, error) {
	if err := ctx.Err(); err != nil {
		return ApplyResult{}, err
	}
	idMaps, err := newCIDMaps(opts.IDMaps)
	if err != nil {
		return ApplyResult{}, err
	}
	defer idMaps.free()
	cRoot := C.CString(root)
	defer C.free(unsafe.Pointer(cRoot))
	cParents := newCStrings(opts.Parents)
	defer cParents.free()
	var cDiffID *C.char
	if strings.ContainsRune(string(opts.ExpectedDiffID), 0) {
		// C would read only up to the NUL: refuse it as the core refuses any malformed one.
		return ApplyResult{}, &Error{Op: "apply", Kind: KindInvalidArgument, Message: fmt.Sprintf(
			"invalid argument: diffID %q is not of the form sha256:<64 lowercase hex digits>", opts.ExpectedDiffID)}
	}
	if opts.ExpectedDiffID != "" {
		cDiffID = C.CString(string(opts.ExpectedDiffID))
		defer C.free(unsafe.Pointer(cDiffID))
	}

	pr, pw, err := newPipe()
	if err != nil {
		return ApplyResult{}, err
	}

	call := newCall(ctx, opts.Progress)
	defer call.finish()

	var feedErr error
	fed := make(chan struct{})
	go func() {
		// Closing the write end is the core's end of input.
		defer pw.Close()
		feedErr = feedFrom(pw, r)
		// Closed before pw: when the core fails on the end of input, fed is already closed
		// (see below).
		close(fed)
	}()

	var aopts C.layerdiff_apply_options
	aopts.whiteouts = C.uint32_t(opts.Whiteouts)
	aopts.parents = cParents.array()
	aopts.parents_len = C.size_t(cParents.len())
	aopts.no_same_owner = C.bool(opts.NoSameOwner)
	aopts.sync_fs = C.bool(opts.SyncFs)
	aopts.ignore_chown_errors = C.bool(opts.IgnoreChownErrors)
	aopts.unpack_threads = C.uint32_t(opts.UnpackThreads)
	aopts.devices = C.uint32_t(opts.Devices)
	aopts.overlay_xattrs = C.uint32_t(opts.OverlayXattrs)
	aopts.overlay_whiteout = C.uint32_t(opts.OverlayWhiteout)
	aopts.expected_diff_id = cDiffID
	aopts.cancel = call.handle
	aopts.progress, aopts.progress_ctx = call.progressHooks()
	aopts.id_maps = idMaps.c

	var out C.layerdiff_apply_result
	cerr := C.layerdiff_apply(cRoot, C.int(pr.Fd()), &aopts, &out)
	runtime.KeepAlive(pr)
	// The core has stopped reading: a feeder blocked on a full pipe gets EPIPE (a Go
	// thread, so no signal) and returns.
	pr.Close()
	if cerr != nil && ctx.Err() != nil {
		// Cancelled: the feeder may be blocked in r.Read, which nothing can interrupt. It
		// stops at its next write (EPIPE); waiting for it would make cancel wait for r.
		if err := call.err(); err != nil {
			freeError(cerr)
			return ApplyResult{}, err
		}
		return ApplyResult{}, call.wrapError("apply", cerr)
	}
	if cerr != nil {
		select {
		case <-fed:
		default:
			// The core failed on its own (a corrupt layer) before the end of input, and
			// returned at once (containerd does too); the feeder may be blocked in r.Read,
			// which nothing can interrupt: it finishes in the background, as after a cancel.
			if err := call.err(); err != nil {
				freeError(cerr)
				return ApplyResult{}, err
			}
			return ApplyResult{}, call.wrapError("apply", cerr)
		}
	}
	<-fed

	if err := call.err(); err != nil {
		freeError(cerr)
		return ApplyResult{}, err
	}
	var readErr *sourceReadError
	if errors.As(feedErr, &readErr) {
		// The core saw a truncated stream; the reader's own error is the real cause.
		freeError(cerr)
		return ApplyResult{}, fmt.Errorf("layerdiff apply: reading the layer: %w", readErr.err)
	}
	if cerr != nil {
		return ApplyResult{}, call.wrapError("apply", cerr)
	}
	// Success: the core read to the end of input, so the feeder finished without error.
	return ApplyResult{
		MediaType: C.GoString(&out.media_type[0]),
		Digest:    digest.Digest(C.GoString(&out.digest[0])),
		Size:      int64(out.size),
	}, nil
}

// newPipe returns a pipe whose ends close on exec, with a larger kernel buffer if allowed.
func newPipe() (*os.File, *os.File, error) {
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, nil, fmt.Errorf("layerdiff: pipe: %w", err)
	}
	// Best effort: the default 64 KiB pipe works, only slower.
	_, _ = unix.FcntlInt(pr.Fd(), unix.F_SETPIPE_SZ, pipeSize)
	return pr, pw, nil
}

var copyBuffers = sync.Pool{New: func() any { b := make([]byte, copyBufferSize); return &b }}

// drainTo copies the core's output from pr to w until EOF. If w fails, it cancels the core
// and keeps reading (and discarding) so the core never writes into a closed pipe.
func drainTo(w io.Writer, pr *os.File, cancel *C.layerdiff_cancel) error {
	bufp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bufp)
	buf := *bufp
	var writeErr error
	for {
		n, err := pr.Read(buf)
		if n > 0 && writeErr == nil {
			if _, werr := w.Write(buf[:n]); werr != nil {
				writeErr = werr
				C.layerdiff_cancel_trigger(cancel)
			}
		}
		if err == io.EOF {
			return writeErr
		}
		if err != nil {
			if writeErr != nil {
				return writeErr
			}
			return err
		}
	}
}

// sourceReadError marks a failure of the caller's reader (as opposed to the pipe).
type sourceReadError struct{ err error }

func (e *sourceReadError) Error() string { return e.err.Error() }
func (e *sourceReadError) Unwrap() error { return e.err }

// feedFrom copies r into the pipe until EOF or until the core stops reading (EPIPE).
func feedFrom(pw *os.File, r io.Reader) error {
	bufp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bufp)
	buf := *bufp
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := pw.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return &sourceReadError{err}
		}
	}
}

// call holds what one core call needs around it: the cancel handle (triggered when ctx is
// done) and the progress callback's handle.
type call struct {
	ctx      context.Context
	handle   *C.layerdiff_cancel
	stop     chan struct{}
	watcher  sync.WaitGroup
	progress *progressState
	progH    cgo.Handle
}

func newCall(ctx context.Context, progress func(uint64)) *call {
	c := &call{ctx: ctx, stop: make(chan struct{})}
	c.handle = C.layerdiff_cancel_new()
	if done := ctx.Done(); done != nil {
		c.watcher.Add(1)
		go func() {
			defer c.watcher.Done()
			select {
			case <-done:
				C.layerdiff_cancel_trigger(c.handle)
			case <-c.stop:
			}
		}()
	}
	if progress != nil {
		c.progress = &progressState{fn: progress, cancel: c.handle}
		c.progH = cgo.NewHandle(c.progress)
	}
	return c
}

// progressHooks returns the C callback and its context (a handle, not a pointer).
func (c *call) progressHooks() (C.layerdiff_progress_fn, unsafe.Pointer) {
	if c.progress == nil {
		return nil, nil
	}
	return C.layerdiff_go_progress_fn(), C.layerdiff_handle_ptr(C.uintptr_t(c.progH))
}

// err reports why the call was stopped from the Go side: a panicking progress callback.
func (c *call) err() error {
	if c.progress != nil {
		if p := c.progress.panicValue(); p != nil {
			return fmt.Errorf("layerdiff: progress callback panicked: %v", p)
		}
	}
	return nil
}

// finish stops the ctx watcher and frees the handles; the core has returned by now.
func (c *call) finish() {
	close(c.stop)
	c.watcher.Wait()
	C.layerdiff_cancel_free(c.handle)
	if c.progress != nil {
		c.progH.Delete()
	}
}

// wrapError converts and frees a core error; a cancellation caused by ctx carries ctx.Err().
func (c *call) wrapError(op string, cerr *C.layerdiff_error) error {
	e := &Error{
		Op:      op,
		Kind:    ErrorKind(C.layerdiff_error_kind(cerr)),
		Errno:   unix.Errno(C.layerdiff_error_errno(cerr)),
		Message: C.GoString(C.layerdiff_error_message(cerr)),
	}
	C.layerdiff_error_free(cerr)
	if e.Kind == KindCanceled {
		e.cause = c.ctx.Err()
	}
	return e
}

func freeError(cerr *C.layerdiff_error) {
	if cerr != nil {
		C.layerdiff_error_free(cerr)
	}
}

// cStrings is a C array of C strings, all in C memory (so C never holds Go pointers).
type cStrings struct {
	ptrs []*C.char
	arr  **C.char
}

func newCStrings(values []string) *cStrings {
	s := &cStrings{}
	if len(values) == 0 {
		return s
	}
	s.arr = (**C.char)(C.malloc(C.size_t(len(values)) * C.size_t(unsafe.Sizeof((*C.char)(nil)))))
	s.ptrs = unsafe.Slice(s.arr, len(values))
	for i, v := range values {
		s.ptrs[i] = C.CString(v)
	}
	return s
}

func (s *cStrings) array() **C.char { return s.arr }
func (s *cStrings) len() int        { return len(s.ptrs) }

func (s *cStrings) free() {
	for _, p := range s.ptrs {
		C.free(unsafe.Pointer(p))
	}
	if s.arr != nil {
		C.free(unsafe.Pointer(s.arr))
	}
}
