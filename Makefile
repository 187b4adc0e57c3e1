# pipesnap. `make demo` and `make test` set up what a fresh machine lacks.
GO ?= go
BIN := bin/pipesnap

.PHONY: all build deps generate check-generated test test-kernels demo fuzz clean man install release image

# The version a release build stamps (pipesnap --version): the nearest
# tag, else the commit, +dirty for uncommitted changes.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
PREFIX ?= /usr/local
DESTDIR ?=

all: build

# urfave/cli's manual page generator (go-md2man, blackfriday) stays out of
# the binary: its package inits cost every run ~0.5 ms of start-up. Every
# go command make runs (the tests' own builds too) gets the tag; `make man`
# builds the generator back in.
export GOFLAGS := -tags=urfave_cli_no_docs

# -buildvcs=auto: the VCS revision goes into the build info (--version)
# even where the environment turns it off, and a build outside a checkout
# still works.
build:
	$(GO) build -buildvcs=auto -o $(BIN) ./cmd/pipesnap

# The manual page, made from the commands' own help.
man:
	mkdir -p man
	GOFLAGS= $(GO) run ./cmd/pipesnap man > man/pipesnap.1

# Installs the binary, the manual page and the bash, zsh and fish
# completions under $(DESTDIR)$(PREFIX).
install: build man
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/pipesnap
	install -D -m 0644 man/pipesnap.1 $(DESTDIR)$(PREFIX)/share/man/man8/pipesnap.8
	mkdir -p $(DESTDIR)$(PREFIX)/share/bash-completion/completions $(DESTDIR)$(PREFIX)/share/zsh/site-functions $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d
	$(BIN) completion bash > $(DESTDIR)$(PREFIX)/share/bash-completion/completions/pipesnap
	$(BIN) completion zsh > $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_pipesnap
	$(BIN) completion fish > $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/pipesnap.fish

# Static release binaries (no cgo, -trimpath, the BPF objects of their
# architecture inside, the version stamped) in dist/, for x86_64 and
# arm64, with their SHA-256 sums.
RELEASE_ARCHES ?= amd64 arm64
release:
	rm -rf dist && mkdir -p dist
	for arch in $(RELEASE_ARCHES); do \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -trimpath -buildvcs=auto \
			-ldflags "-s -w -X main.version=$(VERSION)" \
			-o dist/pipesnap-$(VERSION)-linux-$$arch ./cmd/pipesnap || exit 1; \
	done
	cd dist && sha256sum pipesnap-* > SHA256SUMS

deps:
	scripts/deps.sh

# Regenerates the kernel type headers (bpf/vmlinux_x86.h from the running
# kernel, bpf/vmlinux_arm64.h from a Debian arm64 kernel package's BTF)
# and the bpf2go outputs (Go bindings and BPF objects, for amd64 and
# arm64) of every BPF component: loader/ (bpf/pipes) and pipestate/
# (bpf/pipestate). Commit the result.
generate: deps
	scripts/gen-vmlinux.sh
	scripts/bpf-generate.sh

check-generated: deps
	scripts/check-generated.sh

# The BPF tests need root and kernel BTF; with CI set they fail rather
# than skip where those are missing. The second run is the loader's and
# pipestate's again in the programs' variant for kernels without bpf_loop
# and bpf_d_path in iterators (bpf/compat.h), on this kernel.
test: deps check-generated
	$(GO) vet ./...
	GOFLAGS= $(GO) vet ./cmd/pipesnap
	$(GO) test -count=1 ./...
	PIPESNAP_BPF_WITHOUT=all $(GO) test -count=1 ./loader ./pipestate

# The BPF tests of loader/, pipestate/ and diagnose/ on Debian 11's 5.10
# and Debian 12's 6.1 and 6.12 kernels (x86_64), and Debian 12's 6.12 on
# arm64, in QEMU (no KVM needed), one VM per config; KERNELS=5.10 runs a
# subset. Needs root to install qemu-system-x86, qemu-system-arm,
# busybox-static and cpio when they are missing.
test-kernels:
	GO=$(GO) scripts/test-kernels.sh $(KERNELS)

# Measures the BPF dump against the user-space tee path and a /proc walk
# on workloads of its own (bench/README.md) and writes bench/results.md;
# BENCH_QUICK=1 runs small sizes in under a minute. Needs root; installs
# what deps does (GNU time among them, for peak RSS).
.PHONY: bench
bench: deps
	GO=$(GO) scripts/bench.sh

demo: build
	scripts/demo.sh $(BIN)

fuzz:
	scripts/fuzz.sh $(FUZZTIME)

clean:
	rm -rf bin dist man

# The container image (deploy/image/Containerfile): the static binary on an
# empty base, built offline with podman, buildah or docker.
image:
	GO=$(GO) VERSION=$(VERSION) scripts/image.sh
