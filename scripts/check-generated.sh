#!/usr/bin/env bash
# Fails when the committed BPF outputs (bpf/vmlinux.h, loader/pipes_bpfel.*)
# are not what `make generate` produces from the committed sources.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0

# vmlinux.h comes from the running kernel: compare it only on the kernel
# it was made from.
made_on=$(head -1 bpf/vmlinux.h | sed -n 's/.*BTF of Linux \([^ ]*\) .*/\1/p')
if [ "$made_on" = "$(uname -r)" ]; then
	scripts/gen-vmlinux.sh "$tmp/vmlinux.h"
	if ! cmp -s "$tmp/vmlinux.h" bpf/vmlinux.h; then
		echo "check-generated: bpf/vmlinux.h is stale: run make generate and commit it" >&2
		status=1
	fi
else
	echo "check-generated: bpf/vmlinux.h was made on Linux $made_on, this is $(uname -r): not compared" >&2
fi

cp loader/pipes_bpfel.go loader/pipes_bpfel.o "$tmp/"
(cd loader && go generate ./...)
for f in pipes_bpfel.go pipes_bpfel.o; do
	if ! cmp -s "$tmp/$f" "loader/$f"; then
		echo "check-generated: loader/$f is stale: run make generate and commit it" >&2
		cp "$tmp/$f" "loader/$f"
		status=1
	fi
done
exit $status
