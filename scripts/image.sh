#!/usr/bin/env bash
# Builds pipesnap's container image offline (deploy/image/Containerfile):
# the static binary is built here on the host (CGO_ENABLED=0, -trimpath,
# the version stamped) and copied onto an empty base; nothing is pulled.
# Uses podman, else buildah, else docker, whichever is installed
# (IMAGE_BUILDER=podman|buildah|docker picks one). Tags IMAGE:VERSION
# (IMAGE defaults to pipesnap, VERSION to `git describe`) and prints that
# name on stdout, alone, last.
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
IMAGE=${IMAGE:-pipesnap}
VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo devel)}
# An image tag holds [A-Za-z0-9_.-] only, 128 at most.
TAG=$(printf '%s' "$VERSION" | tr -c 'A-Za-z0-9_.-' '-' | cut -c1-128)

builder=${IMAGE_BUILDER:-}
if [ -z "$builder" ]; then
	for b in podman buildah docker; do
		if command -v "$b" >/dev/null; then
			builder=$b
			break
		fi
	done
fi
if [ -z "$builder" ]; then
	echo "image: no podman, buildah or docker found: install one (apt-get install podman)" >&2
	exit 1
fi

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
echo "image: building the static binary (version $VERSION)" >&2
CGO_ENABLED=0 GOOS=linux "$GO" build -trimpath -buildvcs=auto \
	-ldflags "-s -w -X main.version=$VERSION" -o "$ctx/pipesnap" ./cmd/pipesnap
cp deploy/image/Containerfile "$ctx/Containerfile"

echo "image: $builder building $IMAGE:$TAG" >&2
case "$builder" in
podman) podman build --pull=never --build-arg "VERSION=$VERSION" -f "$ctx/Containerfile" -t "$IMAGE:$TAG" "$ctx" >&2 ;;
buildah) buildah build --pull=never --build-arg "VERSION=$VERSION" -f "$ctx/Containerfile" -t "$IMAGE:$TAG" "$ctx" >&2 ;;
docker) docker build --build-arg "VERSION=$VERSION" -f "$ctx/Containerfile" -t "$IMAGE:$TAG" "$ctx" >&2 ;;
*)
	echo "image: IMAGE_BUILDER=$builder: want podman, buildah or docker" >&2
	exit 2
	;;
esac
echo "$IMAGE:$TAG"
