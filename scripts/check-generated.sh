#!/usr/bin/env bash
# Fails when the committed BPF outputs (bpf/vmlinux_*.h and every bpf2go
# output, *_bpfel.go and *_bpfel.o, wherever it lives) are not what
# `make generate` produces from the committed sources.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0

# compare_header ARCH: bpf/vmlinux_ARCH.h against what gen-vmlinux.sh makes.
compare_header() {
	scripts/gen-vmlinux.sh "$1" "$tmp/vmlinux_$1.h"
	if ! cmp -s "$tmp/vmlinux_$1.h" "bpf/vmlinux_$1.h"; then
		echo "check-generated: bpf/vmlinux_$1.h is stale: run make generate and commit it" >&2
		status=1
	fi
}
# bpf/vmlinux_x86.h comes from the running kernel: compare it only on the
# kernel it was made from.
made_on=$(head -1 bpf/vmlinux_x86.h | sed -n 's/.*BTF of Linux \([^ ]*\) .*/\1/p')
if [ "$made_on" = "$(uname -r)" ]; then
	compare_header x86
else
	echo "check-generated: bpf/vmlinux_x86.h was made on Linux $made_on, this is $(uname -r): not compared" >&2
fi
# bpf/vmlinux_arm64.h comes from a Debian package's BTF: compare it where
# that BTF is cached (scripts/gen-vmlinux.sh arm64 fetches it).
arm64_pkg=$(head -1 bpf/vmlinux_arm64.h | sed -n 's/.*Debian package \([^ )]*\)).*/\1/p')
if [ -s ".cache/vmlinux/$arm64_pkg.btf" ]; then
	compare_header arm64
else
	echo "check-generated: bpf/vmlinux_arm64.h: the BTF of $arm64_pkg is not in .cache/vmlinux/ (scripts/gen-vmlinux.sh arm64 fetches it): not compared" >&2
fi

# Every bpf2go output in the tree (tracked, or new and not ignored), and
# every package that generates some: a component whose outputs were
# never added is caught too.
mapfile -t outputs < <(git ls-files --cached --others --exclude-standard -- '*_bpfel.go' '*_bpfel.o')
mapfile -t dirs < <({
	for f in "${outputs[@]}"; do dirname "$f"; done
	git grep -l --untracked -e 'go:generate go tool bpf2go' -- '*.go' | xargs -r -n1 dirname
} | sort -u)
if [ ${#dirs[@]} -eq 0 ]; then
	echo "check-generated: no bpf2go component found" >&2
	exit 1
fi
for f in "${outputs[@]}"; do
	mkdir -p "$tmp/committed/$(dirname "$f")"
	cp "$f" "$tmp/committed/$f"
done
scripts/bpf-generate.sh "${dirs[@]}"
mapfile -t made < <(git ls-files --cached --others --exclude-standard -- '*_bpfel.go' '*_bpfel.o')
for f in "${made[@]}"; do
	if [ ! -e "$tmp/committed/$f" ]; then
		echo "check-generated: $f was missing: run make generate and commit it" >&2
		status=1
	elif ! cmp -s "$tmp/committed/$f" "$f"; then
		echo "check-generated: $f is stale: run make generate and commit it" >&2
		cp "$tmp/committed/$f" "$f"
		status=1
	fi
done
exit $status
