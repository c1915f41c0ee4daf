# layerdiff: one Rust crate, three front doors (C ABI, Go package, CLI).
# `make` builds the libraries, the CLI and the header; `make test` runs every test;
# `make demo` runs the main job end to end; `make bench` runs the benchmarks.

CARGO   ?= cargo
GO      ?= go
CC      ?= cc
PREFIX  ?= /usr/local
RELEASE := target/release
LIBDIR  := $(PREFIX)/lib
INCDIR  := $(PREFIX)/include

.PHONY: all build header header-check test rust-test c-test go-test demo bench install clean

all: build

build:
	$(CARGO) build --release --locked

# Regenerate the checked-in C header.
header:
	cbindgen --quiet -c cbindgen.toml -o include/layerdiff.h .

# Fail when include/layerdiff.h is not what cbindgen generates from the sources.
header-check:
	@tmp=$$(mktemp) && cbindgen --quiet -c cbindgen.toml -o $$tmp . && \
	  if cmp -s $$tmp include/layerdiff.h; then rm -f $$tmp; echo "header-check: include/layerdiff.h is current"; \
	  else diff -u include/layerdiff.h $$tmp | head -40; rm -f $$tmp; \
	       echo "header-check: include/layerdiff.h is stale: run 'make header'"; exit 1; fi

test: rust-test header-check c-test go-test

rust-test:
	$(CARGO) test --release --locked

c-test: build
	$(MAKE) -C tests/c

# Go's build cache does not hash the library named in #cgo LDFLAGS, so a rebuilt
# liblayerdiff.a would link stale test binaries; a define carrying the library's checksum
# makes the cgo compile (and so every link) depend on it.
GO_LIB_STAMP = CGO_CFLAGS="-g -O2 -DLAYERDIFF_LIB_STAMP=$$(cksum < $(CURDIR)/$(RELEASE)/liblayerdiff.a | cut -d' ' -f1)"

go-test: build
	cd go && $(GO_LIB_STAMP) $(GO) vet ./... && $(GO_LIB_STAMP) $(GO) test -count=1 ./...
	cd go && $(GO_LIB_STAMP) $(GO) test -count=1 -race -run Concurrent .

demo: build
	cd go && $(GO_LIB_STAMP) $(GO) run ./cmd/demo

bench: build
	$(CARGO) bench --locked
	cd go && $(GO_LIB_STAMP) $(GO) test -run '^$$' -bench . -benchmem -benchtime 3x -timeout 60m ./...

install: build
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCDIR) $(DESTDIR)$(LIBDIR)/pkgconfig
	install -m 0644 $(RELEASE)/liblayerdiff.a $(DESTDIR)$(LIBDIR)/
	install -m 0644 include/layerdiff.h $(DESTDIR)$(INCDIR)/

clean:
	$(CARGO) clean
