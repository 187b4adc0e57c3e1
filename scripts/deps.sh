#!/usr/bin/env bash
# Installs, from Debian's packages, what building and testing pipesnap
# needs on a fresh machine, and says what it installs:
#   - clang-19, llvm-19, bpftool, libbpf-dev: to regenerate and check the
#     BPF objects (go build alone needs none of them);
#   - prometheus, for its promtool: the alert rule tests (its server is
#     stopped and disabled: only promtool is wanted);
#   - zsh and fish: the completion scripts are parsed by each shell;
#   - podman, runc, conmon, busybox-static: the container tests run real
#     containers (an image made offline from busybox);
#   - time (GNU time): make bench measures peak RSS with it.
# Go itself comes with the machine. Another apt-get or dpkg holding the
# package lock is waited for, 5 minutes at most.
set -euo pipefail

# apt runs apt-get, waiting (bounded) while another apt or dpkg holds
# its locks: a fresh machine often runs its own upgrade at boot.
apt() {
	local out rc i
	for i in $(seq 1 60); do
		rc=0
		out=$(DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=5 "$@" 2>&1) || rc=$?
		if [ $rc -eq 0 ]; then
			return 0
		fi
		if ! grep -qiE 'could not get lock|unable to acquire|is another process using it' <<<"$out"; then
			printf '%s\n' "$out" >&2
			return $rc
		fi
		[ "$i" -gt 1 ] || echo "deps: waiting for another apt-get or dpkg to release the package lock (5 minutes at most)" >&2
		sleep 5
	done
	printf '%s\n' "$out" >&2
	echo "deps: the package lock was held for 5 minutes: try again when the other apt-get is done" >&2
	return 1
}

need=()
command -v clang-19 >/dev/null || need+=(clang-19)
command -v llvm-strip-19 >/dev/null || need+=(llvm-19)
command -v bpftool >/dev/null || need+=(bpftool)
[ -f /usr/include/bpf/bpf_helpers.h ] || need+=(libbpf-dev)
command -v zsh >/dev/null || need+=(zsh)
command -v fish >/dev/null || need+=(fish)
command -v promtool >/dev/null || need+=(prometheus)
command -v podman >/dev/null || need+=(podman)
command -v runc >/dev/null || need+=(runc)
command -v conmon >/dev/null || [ -x /usr/libexec/podman/conmon ] || need+=(conmon)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
[ -x /usr/bin/time ] || need+=(time)
if [ ${#need[@]} -eq 0 ]; then
	exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "deps: missing ${need[*]}: run as root, or: sudo apt-get install --no-install-recommends ${need[*]}" >&2
	exit 1
fi
echo "deps: installing ${need[*]} (Debian packages)" >&2
apt update -qq
tools=() prom=()
for p in "${need[@]}"; do
	if [ "$p" = prometheus ]; then prom+=("$p"); else tools+=("$p"); fi
done
if [ ${#tools[@]} -gt 0 ]; then
	apt install -y -qq "${tools[@]}" >/dev/null
fi
if [ ${#prom[@]} -gt 0 ]; then
	apt install -y -qq --no-install-recommends prometheus >/dev/null
	# Only promtool is wanted: stop and disable the server the package
	# starts.
	service prometheus stop >/dev/null 2>&1 || true
	if command -v systemctl >/dev/null; then systemctl disable prometheus >/dev/null 2>&1 || true; fi
	update-rc.d prometheus disable >/dev/null 2>&1 || true
fi
