#!/usr/bin/env bash
# Runs the bpf2go line (gen.go) of each given package, or of every package
# that has one, and puts the outputs (*_bpfel.go, *_bpfel.o) back in place.
# The build runs in one fixed directory: clang's BTF type order depends on
# the absolute path it builds at, so a build at the checkout's own path
# would differ from one checkout to the next and no check of the committed
# outputs could pass everywhere.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)
build=/tmp/pipesnap-bpf-build
if [ $# -gt 0 ]; then
	pkgs=("$@")
else
	mapfile -t pkgs < <(git grep -l --untracked -e 'go:generate go tool bpf2go' -- '*.go' | xargs -r -n1 dirname | sort -u)
fi
exec 9>"$build.lock"
flock 9
rm -rf "$build"
mkdir -p "$build"
cp go.mod go.sum "$build/"
cp -r bpf "$build/bpf"
for p in "${pkgs[@]}"; do
	mkdir -p "$build/$p"
	cp "$p/gen.go" "$build/$p/"
done
for p in "${pkgs[@]}"; do
	(cd "$build/$p" && go generate .)
	cp "$build/$p/"*_bpfel.go "$build/$p/"*_bpfel.o "$top/$p/"
done
rm -rf "$build"
