# pipesnap. `make demo` and `make test` set up what a fresh machine lacks.
GO ?= go
BIN := bin/pipesnap

.PHONY: all build deps generate check-generated test test-kernels demo fuzz clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/pipesnap

deps:
	scripts/deps.sh

# Regenerates bpf/vmlinux.h (from the running kernel) and the bpf2go
# outputs (Go bindings and BPF objects) of every BPF component: loader/
# (bpf/pipes) and pipestate/ (bpf/pipestate). Commit the result.
generate: deps
	scripts/gen-vmlinux.sh
	scripts/bpf-generate.sh

check-generated: deps
	scripts/check-generated.sh

# The BPF tests need root and kernel BTF; with CI set they fail rather
# than skip where those are missing.
test: deps check-generated
	$(GO) vet ./...
	$(GO) test -count=1 ./...

# The loader's BPF tests on Debian's 6.1 and 6.12 kernels in QEMU (no KVM
# needed), one VM per config; KERNELS=6.12 runs a subset. Needs root to
# install qemu-system-x86, busybox-static and cpio when they are missing.
test-kernels:
	GO=$(GO) scripts/test-kernels.sh $(KERNELS)

# Measures the BPF dump against the user-space tee path and a /proc walk
# on workloads of its own (bench/README.md) and writes bench/results.md;
# BENCH_QUICK=1 runs small sizes in under a minute. Needs root.
.PHONY: bench
bench:
	GO=$(GO) scripts/bench.sh

demo: build
	scripts/demo.sh $(BIN)

fuzz:
	scripts/fuzz.sh $(FUZZTIME)

clean:
	rm -rf bin
