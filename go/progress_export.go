package layerdiff

// This file holds the //export: cgo forbids C definitions in the preamble of such a file.

/*
#include <stdint.h>
#include "layerdiff.h"
*/
import "C"

import (
	"runtime/cgo"
	"sync"
	"unsafe"
)

// progressState is what the progress handle points at.
type progressState struct {
	fn     func(uint64)
	cancel *C.layerdiff_cancel

	mu       sync.Mutex
	panicked any
}

func (p *progressState) panicValue() any {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.panicked
}

// layerdiffGoProgress is the C progress callback; ctx carries a cgo.Handle. It may run on
// a core worker thread. A panic must not unwind into C: it is recorded, the call is
// cancelled, and the Go wrapper reports it.
//
//export layerdiffGoProgress
func layerdiffGoProgress(ctx unsafe.Pointer, bytes C.uint64_t) {
	state, ok := cgo.Handle(uintptr(ctx)).Value().(*progressState)
	if !ok {
		return
	}
	defer func() {
		if r := recover(); r != nil {
			state.mu.Lock()
			if state.panicked == nil {
				state.panicked = r
			}
			state.mu.Unlock()
			C.layerdiff_cancel_trigger(state.cancel)
		}
	}()
	if state.panicValue() != nil {
		return
	}
	state.fn(uint64(bytes))
}
