#!/usr/bin/env bash
# Installs what building and testing pipesnap needs on a fresh Debian
# machine: clang/llvm 19 and bpftool to regenerate the BPF objects (go
# build alone needs none of them). Go itself comes with the machine.
set -euo pipefail
need=()
command -v clang-19 >/dev/null || need+=(clang-19)
command -v llvm-strip-19 >/dev/null || need+=(llvm-19)
command -v bpftool >/dev/null || need+=(bpftool)
[ -f /usr/include/bpf/bpf_helpers.h ] || need+=(libbpf-dev)
if [ ${#need[@]} -gt 0 ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "deps: missing ${need[*]}: run as root, or: sudo apt-get install ${need[*]}" >&2
		exit 1
	fi
	echo "deps: installing ${need[*]}" >&2
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# promtool, to check and test the alerting rules in deploy/prometheus/
# (go test ./metrics; it skips without promtool, except under CI). Debian
# ships it in the prometheus package, which also starts and enables a
# Prometheus server: install it without recommends, then stop and disable
# the server; only promtool is wanted.
if ! command -v promtool >/dev/null; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "deps: missing promtool (the alert rule tests skip): run as root, or: sudo apt-get install --no-install-recommends prometheus" >&2
	else
		echo "deps: installing prometheus (for promtool)" >&2
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
		service prometheus stop >/dev/null 2>&1 || true
		if command -v systemctl >/dev/null; then systemctl disable prometheus >/dev/null 2>&1 || true; fi
		update-rc.d prometheus disable >/dev/null 2>&1 || true
	fi
fi
