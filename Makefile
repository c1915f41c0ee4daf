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
BINDIR  := $(PREFIX)/bin
MANDIR  := $(PREFIX)/share/man
# Where bash-completion, zsh and fish look for completions shipped with a program.
BASHCOMPDIR := $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR  := $(PREFIX)/share/zsh/site-functions
FISHCOMPDIR := $(PREFIX)/share/fish/vendor_completions.d
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
SOMAJOR := $(firstword $(subst ., ,$(VERSION)))
# Where `make test` installs the library for the C and Go tests, which build against the
# installed header, libraries and pkg-config files only.
TEST_PREFIX := $(CURDIR)/build/prefix

.PHONY: all build deps header header-check lint test rust-test test-prefix c-test go-test e2e fuzz-short fuzz-rust fuzz demo bench bench-commit bench-micro install install-cli clean

all: build

build:
	$(CARGO) build --release --locked

# Regenerate the checked-in C header from the whole crate (as any checker running plain
# `cbindgen -c cbindgen.toml .` would). Public constants of the Rust core that are not part of
# the C ABI carry a `/// cbindgen:ignore` line, or are crate-private, to stay out of it.
CAPI_SRC := .
header: deps
	cbindgen --quiet -c cbindgen.toml -o include/layerdiff.h $(CAPI_SRC)

# Fail when include/layerdiff.h is not what cbindgen generates from the sources.
header-check: deps
	@tmp=$$(mktemp) && cbindgen --quiet -c cbindgen.toml -o $$tmp $(CAPI_SRC) && \
	  if cmp -s $$tmp include/layerdiff.h; then rm -f $$tmp; echo "header-check: include/layerdiff.h is current"; \
	  else diff -u include/layerdiff.h $$tmp | head -40; rm -f $$tmp; \
	       echo "header-check: include/layerdiff.h is stale: run 'make header'"; exit 1; fi

test: deps lint rust-test header-check c-test go-test e2e fuzz-short

# Debian packages, rustfmt/clippy and cbindgen, installed only when missing (fresh machine).
deps:
	@scripts/install-deps

# Formatting and lints, as every commit should already satisfy them.
lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --release --locked --all-targets -- -D warnings
	@# fuzz/ is its own workspace that no build or test compiles: check it here so it cannot rot.
	$(CARGO) check --locked --manifest-path fuzz/Cargo.toml --all-targets
	@out=$$(cd go && gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi

rust-test:
	$(CARGO) test --release --locked --workspace

# The prefix the C and Go tests build against: `make install` into the tree, so they see the
# installed header, libraries and pkg-config files exactly as a user of an install does.
test-prefix:
	@$(MAKE) --no-print-directory install PREFIX=$(TEST_PREFIX) >/dev/null

c-test: test-prefix
	$(MAKE) -C tests/c PREFIX=$(TEST_PREFIX)

# The Go package finds liblayerdiff through pkg-config (layerdiff-static.pc). Go's build cache
# hashes neither the library nor pkg-config's output, so a rebuilt liblayerdiff.a (or another
# prefix) would link stale binaries; a define carrying their checksum makes the cgo compile (and
# so every link) depend on them.
GO_ENV = PKG_CONFIG_PATH=$(TEST_PREFIX)/lib/pkgconfig \
  CGO_CFLAGS="-g -O2 -DLAYERDIFF_LIB_STAMP=$$( { cat $(TEST_PREFIX)/lib/liblayerdiff.a; \
    PKG_CONFIG_PATH=$(TEST_PREFIX)/lib/pkgconfig pkg-config --cflags --libs layerdiff-static; } | cksum | cut -d' ' -f1)"

go-test: test-prefix
	cd go && $(GO_ENV) $(GO) vet ./... && $(GO_ENV) $(GO) test -count=1 ./...
	cd go && $(GO_ENV) $(GO) test -count=1 -race -run Concurrent .

# Differential fuzzing with Go's native fuzzer (docs/fuzzing.md): apply against containerd's
# archive.Apply, diff against its WriteDiff, the tar reader against Go's archive/tar. Each
# target runs for FUZZ_TIME (15s: a bounded run for `make test`); a long run is
# `make fuzz FUZZ_TIME=2h`. -v shows why a target skips. A failing input is saved under
# go/<package>/testdata/fuzz/.
FUZZ_TIME     ?= 15s
FUZZ_PARALLEL ?= 1
# Go spends up to 60 s shrinking each new interesting input by default: most of a short run
# when one input costs a CLI run and fresh sandboxes.
FUZZ_MINIMIZE ?= 3s
FUZZ_TARGETS  := FuzzApply:./parity/hostile FuzzCompare:./parity/compare FuzzTarHeaders:./parity/tarread

fuzz-short: test-prefix
	@set -e; cd go; for t in $(FUZZ_TARGETS); do \
	  echo "fuzz: $${t%%:*} for $(FUZZ_TIME)"; \
	  $(GO_ENV) $(GO) test -v -run '^$$' -fuzz "^$${t%%:*}$$" -fuzztime $(FUZZ_TIME) -fuzzminimizetime $(FUZZ_MINIMIZE) \
	    -parallel $(FUZZ_PARALLEL) $${t#*:}; \
	done
	@$(MAKE) --no-print-directory fuzz-rust FUZZ_RUST_SECONDS=$(FUZZ_RUST_SHORT_SECONDS)

# The Rust targets (fuzz/, cargo-fuzz on stable), each for FUZZ_RUST_SECONDS: `make fuzz` for
# 600 s, `make fuzz-short` (in `make test`) for FUZZ_RUST_SHORT_SECONDS after replaying every
# seed (the instrumented build takes a minute or two). New inputs go to fuzz/corpus/TARGET,
# crashes to fuzz/artifacts/TARGET.
FUZZ_RUST_SECONDS ?= 600
FUZZ_RUST_SHORT_SECONDS ?= 20
FUZZ_RUST_TARGETS := tar_reader resolver

fuzz-rust:
	@scripts/install-deps fuzz
	@set -e; cd fuzz; for t in $(FUZZ_RUST_TARGETS); do \
	  echo "fuzz: $$t for $(FUZZ_RUST_SECONDS)s"; \
	  mkdir -p corpus/$$t; seeds=; if [ -d seeds/$$t ]; then seeds=seeds/$$t; fi; \
	  $(CARGO) fuzz run --sanitizer none $$t corpus/$$t $$seeds -- -max_total_time=$(FUZZ_RUST_SECONDS); \
	done

fuzz: fuzz-short
	@$(MAKE) --no-print-directory fuzz-rust

# A real containerd daemon, stock (with the layerdiff-diffd proxy plugin) and built with the
# layerdiff plugin; go/e2e is its own module (containerd's daemon pulls in CRI and more).
# The four programs it builds are kept in E2E_BIN_CACHE, under a key of their sources and the
# library (only the newest key is kept).
E2E_BIN_CACHE ?= $(CURDIR)/build/e2e-bin
e2e: test-prefix
	cd go/e2e && $(GO_ENV) $(GO) vet ./... && \
	  E2E_BIN_CACHE=$(E2E_BIN_CACHE) $(GO_ENV) $(GO) test -count=1 -timeout 20m -v ./...

demo: test-prefix
	cd go && $(GO_ENV) $(GO) run ./cmd/demo

# One table: layerdiff, containerd (with igzip, unpigz, its Go gzip) and tar/pigz/gzip/zstd, on a
# tmpfs and on the disk (BENCH_DISK), on a generated tree and on GOROOT (go/cmd/bench).
# BENCH_FLAGS picks a subset, e.g. BENCH_FLAGS='-runs 5 -fs tmpfs -jobs apply-gzip'.
# `make bench-micro` runs the older per-crate benchmarks (cargo bench, go test -bench).
BENCH_DISK  ?= $(CURDIR)/build/bench
BENCH_FLAGS ?=
bench: test-prefix
	@scripts/install-deps bench
	cd go && $(GO_ENV) $(GO) build -o ../build/layerdiff-bench ./cmd/bench
	build/layerdiff-bench -disk $(BENCH_DISK) $(BENCH_FLAGS)

# The commit job alone (go/cmd/bench/commit.go): a container's commit on containerd's overlayfs
# snapshotter (10k- and 100k-file bases, one of them in 3 layers; 10 and 1,000 changes):
# Differ.Compare with the upperdir fast path, with it off (our double walk) and containerd's
# walking differ. BENCH_COMMIT_FLAGS picks, e.g.
# BENCH_COMMIT_FLAGS='-runs 9 -fs tmpfs -commit-bases 100000:400 -commit-changes 10,100,1000'.
BENCH_COMMIT_FLAGS ?= -runs 5 -fs tmpfs,disk -commit-bases 10000:40,100000:400,100000:400:3
bench-commit: test-prefix
	cd go && $(GO_ENV) $(GO) build -o ../build/layerdiff-bench ./cmd/bench
	build/layerdiff-bench -disk $(BENCH_DISK) -jobs commit $(BENCH_COMMIT_FLAGS)

bench-micro: test-prefix
	$(CARGO) bench --locked
	cd go && $(GO_ENV) $(GO) test -run '^$$' -bench . -benchmem -benchtime 3x -timeout 60m ./...

# The installed shared library carries the full version; its SONAME (set in build.rs) is
# liblayerdiff.so.$(SOMAJOR). Two pkg-config files: layerdiff.pc is the usual one (shared by
# default, fully static with --static); layerdiff-static.pc names liblayerdiff.a itself, for
# programs that link liblayerdiff statically but libc dynamically (the Go package does: `-l`
# would pick the .so installed beside the .a).
install: build $(RELEASE)/native-static-libs
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCDIR) $(DESTDIR)$(LIBDIR)/pkgconfig
	install -m 0644 $(RELEASE)/liblayerdiff.a $(DESTDIR)$(LIBDIR)/
	install -m 0755 $(RELEASE)/liblayerdiff.so $(DESTDIR)$(LIBDIR)/liblayerdiff.so.$(VERSION)
	ln -sfn liblayerdiff.so.$(VERSION) $(DESTDIR)$(LIBDIR)/liblayerdiff.so.$(SOMAJOR)
	ln -sfn liblayerdiff.so.$(SOMAJOR) $(DESTDIR)$(LIBDIR)/liblayerdiff.so
	install -m 0644 include/layerdiff.h $(DESTDIR)$(INCDIR)/
	$(call write_pc,layerdiff,'Libs: -L$${libdir} -llayerdiff' \
	  "Libs.private: $$(cat $(RELEASE)/native-static-libs)") > $(DESTDIR)$(LIBDIR)/pkgconfig/layerdiff.pc
	$(call write_pc,layerdiff-static,'Libs: $${libdir}/liblayerdiff.a '"$$(cat $(RELEASE)/native-static-libs)") \
	  > $(DESTDIR)$(LIBDIR)/pkgconfig/layerdiff-static.pc
	$(MAKE) install-cli

# The CLI, its man pages and shell completions; the last two are generated by the CLI itself
# from its command line definition, so they always match it.
install-cli: build
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 \
	  $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR) $(DESTDIR)$(FISHCOMPDIR)
	install -m 0755 $(RELEASE)/layerdiff $(DESTDIR)$(BINDIR)/
	$(RELEASE)/layerdiff generate-man $(DESTDIR)$(MANDIR)/man1
	$(RELEASE)/layerdiff completions bash > $(DESTDIR)$(BASHCOMPDIR)/layerdiff
	$(RELEASE)/layerdiff completions zsh > $(DESTDIR)$(ZSHCOMPDIR)/_layerdiff
	$(RELEASE)/layerdiff completions fish > $(DESTDIR)$(FISHCOMPDIR)/layerdiff.fish

# $(call write_pc,NAME,LIBS-LINES): print a pkg-config file for this install; LIBS-LINES are
# printf arguments (quoted shell words), one line each.
write_pc = printf '%s\n' \
	  'prefix=$(PREFIX)' \
	  'libdir=$(LIBDIR)' \
	  'includedir=$(INCDIR)' \
	  '' \
	  'Name: $(1)' \
	  'Description: Compute and apply OCI image layer diffs, byte-identical to containerd' \
	  'Version: $(VERSION)' \
	  'Cflags: -I$${includedir}' \
	  $(2)

# The system libraries a static link of liblayerdiff.a needs, as rustc reports them (for the
# pkg-config file's Libs.private). Recomputed only when the dependencies change. -lgcc_s is
# dropped: the C compiler driver links the unwinder itself (libgcc_s as needed, or libgcc_eh
# with -static, where an explicit -lgcc_s would fail to link).
$(RELEASE)/native-static-libs: Cargo.toml Cargo.lock
	$(CARGO) rustc --release --locked --lib --crate-type staticlib -- --print native-static-libs 2>&1 \
	  | sed -n 's/^note: native-static-libs: //p' | tail -1 | sed 's/-lgcc_s *//' > $@.tmp
	test -s $@.tmp && mv $@.tmp $@
	$(CARGO) build --release --locked

clean:
	$(CARGO) clean
