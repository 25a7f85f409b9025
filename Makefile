# nexcage: build, test and demo entry points. `make test` and `make demo`
# install what they need from Debian's packages (scripts/install-deps.sh).

GO       ?= go
BIN      := bin/nexcage
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)
# CI and `make test` must never skip a test for want of a tool or of root.
TEST_ENV := NEXCAGE_REQUIRE_TOOLS=1 $(if $(filter 0,$(shell id -u)),NEXCAGE_REQUIRE_ROOT=1)
DEMO_DIR := build/demo
# Programs under testdata/ that ./... skips: the PVE stand-in the end-to-end
# tests run as pct/pvesm/pvesh, the demo image maker and the bench driver.
VET_EXTRA := ./testdata/pve ./testdata/demo ./testdata/bench

.PHONY: all build deps test test-short docs demo bench fuzz soak clean

all: build

# A static binary: no libc at run time, copy it to any Proxmox host.
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/nexcage

deps:
	scripts/install-deps.sh

# Every test, including the end-to-end ones against a real registry process,
# umoci and LXC.
test: deps
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./... $(VET_EXTRA)
	$(TEST_ENV) $(GO) test -race -count=1 -timeout 45m ./...

# Unit tests only: what a quick edit-compile-test loop needs.
test-short:
	$(GO) test -short ./...

# The command reference (docs/commands/*.md) and the man pages
# (docs/man/*.1), generated from the command table; TestGeneratedDocs fails
# when they are stale.
docs:
	$(GO) test ./cmd/nexcage -count=1 -run '^TestGeneratedDocs$$' -update

# The main job on a demo image built locally from the Alpine minirootfs:
# no registry and no network needed.
demo: build deps
	rm -rf $(DEMO_DIR)
	$(GO) run ./testdata/demo $(DEMO_DIR)/layout
	$(BIN) pull --store $(DEMO_DIR)/store oci:$(DEMO_DIR)/layout:demo
	$(BIN) unpack --store $(DEMO_DIR)/store oci:$(DEMO_DIR)/layout:demo $(DEMO_DIR)/bundle
	$(BIN) convert $(DEMO_DIR)/bundle -o $(DEMO_DIR)/templates/
	$(BIN) build --store $(DEMO_DIR)/store oci:$(DEMO_DIR)/layout:demo -o $(DEMO_DIR)/built/
	cmp $(DEMO_DIR)/templates/*.tar.zst $(DEMO_DIR)/built/*.tar.zst
	$(BIN) list --store $(DEMO_DIR)/store
	@echo "demo: bundle in $(DEMO_DIR)/bundle, template and its .conf/.json in $(DEMO_DIR)/templates"

clean:
	rm -rf bin build

# `make && sudo make install`: installs bin/nexcage as built (building it only
# when absent, since root's PATH often lacks Go), the man pages from docs/man
# and the bash, zsh and fish completions. DESTDIR stages for packagers.
# (A .PHONY line of their own: merges with other edits of the main one.)
.PHONY: install uninstall deb
PREFIX  ?= /usr/local
install: $(if $(wildcard $(BIN)),,build)
	DESTDIR='$(DESTDIR)' PREFIX='$(PREFIX)' BIN='$(BIN)' scripts/install.sh

uninstall:
	DESTDIR='$(DESTDIR)' PREFIX='$(PREFIX)' scripts/install.sh --uninstall

# build/deb/nexcage_VERSION_{amd64,arm64}.deb for Proxmox VE hosts.
deb:
	GO='$(GO)' VERSION='$(VERSION)' OUT=build/deb scripts/deb.sh

# Speed and memory against the skopeo + umoci + tar | zstd pipeline and the
# decompress+recompress floor, on a Debian image made once with debootstrap
# (root; see scripts/bench.sh). Then the Go micro-benchmarks.
bench: deps
	scripts/bench.sh
	$(GO) test -run '^$$' -bench . -benchtime 10x ./rootfs ./convert

# Every fuzz target for FUZZTIME each; what they find lands in
# testdata/fuzz/ as regression seeds that go test then always runs.
FUZZTIME ?= 60s
FUZZ_TARGETS := rootfs:FuzzParseRef rootfs:FuzzFlatten lxc:FuzzParseRender lxc:FuzzParseRenderKeepsContent lxc:FuzzFromSpec \
	lxc:FuzzJoinSplitCommand lxc:FuzzInitCommand pct:FuzzMapError convert:FuzzWriteTar \
	internal/saferoot:FuzzResolve
fuzz:
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t#*:}; echo "== $$pkg $$name"; \
		$(GO) test ./$$pkg -run '^$$' -fuzz "^$$name$$" -fuzztime $(FUZZTIME) || exit 1; \
	done

# The long soak: 10,000 iterations of list, build (cache hit and miss) and
# convert in one process, failing if heap, RSS or goroutines keep growing.
# make test runs a short one.
soak:
	$(GO) test ./cmd/nexcage -run TestSoak -soak.n 10000 -timeout 2h -v
