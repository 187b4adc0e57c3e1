#!/usr/bin/env bash
# Runs the BPF tests of loader/ (dump), pipestate/ (ls, diagnose) and diagnose/ (the
# scenarios of internal/pipetest/scenarios.go) on Debian's kernels in QEMU (no KVM):
# Debian 11's 5.10 and Debian 12's 6.1 and 6.12.
#
#   scripts/test-kernels.sh [CONFIG...]
#
# CONFIG, all five by default:
#   5.10         Debian 11's 5.10, KASLR on, 4-level paging: no bpf_loop, no
#                bpf_d_path in iterators, no pid-scoped iterators, wchan
#                always 0, BPF memory charged to RLIMIT_MEMLOCK (the
#                programs' variant without bpf_loop, bpf/compat.h)
#   6.1          Debian 12's 6.1, KASLR on (bases randomized)
#   6.1-nokaslr  the same kernel booted with nokaslr
#   6.1-4level   6.1, KASLR on, on a CPU without LA57: 4-level paging
#   6.12         the 6.12 kernel of Debian 12's security suite
# The others run on -cpu max, which has LA57: the 6.x kernels use 5-level
# paging, whose direct map and vmemmap sit elsewhere (5.10's is built
# without it).
#
# Kernels come from Debian's packages (linux-image-*-cloud-amd64-unsigned,
# the newest ABI apt-cache knows of, or KERNEL_5_10 / KERNEL_6_1 /
# KERNEL_6_12 to pin a package name) and are cached in .cache/test-kernels/.
# Debian 11's (bullseye) come through package lists of their own in
# .cache/test-kernels/apt-bullseye/: the system's apt sources and lists
# are left as they are. The test binaries are built statically and packed
# with busybox into an initramfs whose /init
# mounts proc, sysfs, devtmpfs, bpffs and a tmpfs on /tmp, runs the tests
# with CI=1 (so they cannot skip) and writes their output and exit status
# to the second serial port. Each VM is killed after TEST_KERNELS_TIMEOUT
# seconds (default 600). Exits non-zero if any config failed.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

GO=${GO:-go}
CACHE=${TEST_KERNELS_CACHE:-.cache/test-kernels}
VM_TIMEOUT=${TEST_KERNELS_TIMEOUT:-600}
# loader/'s BPF tests (under a minute a config under TCG); -test.short
# makes TestDumpLivePipe do 10 dumps instead of 50. TestVariantAgreesWithProbes
# checks the variant the kernel got (bpf/compat.h) against other probes;
# TestDumpKindsWithoutNewerHelpers runs the variant for kernels without
# bpf_loop on every kernel.
RUN=${TEST_KERNELS_RUN:-'^(TestCalibrationVerifies|TestCalibrationSources|TestExplainMissingFindsNothingHere|TestVariantAgreesWithProbes|TestScopedWalkOfExitedPid|TestWrongTranslationReadsNothing|TestDumpKinds|TestDumpKindsWithoutNewerHelpers|TestDumpLeavesNothing|TestDumpLivePipe|TestDumpLivePipeFrozen|TestDumpManyPipes|TestDumpCgroups|TestDumpCgroupsTruncated)$'}
# pipestate/'s BPF tests: who is blocked, read from the wait queues, with
# and without the wake functions from kallsyms.
RUN_PIPESTATE=${TEST_KERNELS_RUN_PIPESTATE:-'^(TestStuckPipelines|TestBlockedOutsideWalk|TestAll|TestNothingLeaks|TestWakeFuncsNotNeeded|TestWakeFuncsNeeded|TestEpollWaiter|TestOpenWaits|TestWaitDurations|TestCgroups)$'}
# diagnose/'s: every scenario on a live walk.
RUN_DIAGNOSE=${TEST_KERNELS_RUN_DIAGNOSE:-'^TestScenariosLive$'}
configs=("$@")
[ ${#configs[@]} -gt 0 ] || configs=(5.10 6.1 6.1-nokaslr 6.1-4level 6.12)

log() { echo "test-kernels: $*" >&2; }
die() { log "$*"; exit 1; }

# Host tools, from Debian's packages.
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || need+=(busybox-static)
command -v cpio >/dev/null || need+=(cpio)
if [ ${#need[@]} -gt 0 ]; then
	[ "$(id -u)" -eq 0 ] || die "missing ${need[*]}: run as root, or: sudo apt-get install ${need[*]}"
	log "installing ${need[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# apt_for SERIES: the options that make apt-get and apt-cache use the
# package lists that carry SERIES: the system's for Debian 12's kernels, a
# bullseye source list and lists of their own for 5.10.
apt_for() {
	case $1 in
	5.10)
		local d
		d=$(realpath -m "$CACHE/apt-bullseye")
		mkdir -p "$d/lists/partial" "$d/cache/archives/partial"
		echo 'deb http://deb.debian.org/debian bullseye main' > "$d/sources.list"
		printf '%s\n' -o "Dir::Etc::SourceList=$d/sources.list" -o Dir::Etc::SourceParts=/nonexistent \
			-o "Dir::State::Lists=$d/lists" -o "Dir::Cache=$d/cache" \
			-o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false \
			-o Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false
		;;
	esac
}

# kernel_pkg SERIES: the package to test, the newest ABI Debian lists.
kernel_pkg() {
	local re pin opts
	case $1 in
	5.10) re='^linux-image-5\.10\.0-[0-9]+-cloud-amd64-unsigned$' pin=${KERNEL_5_10:-} ;;
	6.1) re='^linux-image-6\.1\.0-[0-9]+-cloud-amd64-unsigned$' pin=${KERNEL_6_1:-} ;;
	6.12) re='^linux-image-6\.12\.[0-9]+\+deb12-cloud-amd64-unsigned$' pin=${KERNEL_6_12:-} ;;
	*) die "no kernel series $1" ;;
	esac
	[ -z "$pin" ] || { echo "$pin"; return; }
	mapfile -t opts < <(apt_for "$1")
	local pkg
	pkg=$(apt-cache "${opts[@]}" search --names-only "$re" 2>/dev/null | awk '{print $1}' | sort -V | tail -1)
	if [ -z "$pkg" ]; then
		log "apt-cache lists no $re: running apt-get update"
		apt-get "${opts[@]}" update -qq >&2
		pkg=$(apt-cache "${opts[@]}" search --names-only "$re" | awk '{print $1}' | sort -V | tail -1)
	fi
	[ -n "$pkg" ] || die "Debian lists no package matching $re"
	echo "$pkg"
}

# download DIR PKG [APT_OPTION...]
download() {
	local dir=$1 pkg=$2
	shift 2
	# Only the .deb tells whether it worked (apt warns when _apt cannot write there).
	(cd "$dir" && apt-get "$@" download -q "$pkg" 2>&1) | grep -v '^W: Download is performed unsandboxed' >&2
	[ -n "$(find "$dir" -maxdepth 1 -name '*.deb')" ]
}

# fetch_kernel SERIES: prints the path of the cached vmlinuz.
fetch_kernel() {
	local pkg deb dir old opts
	pkg=$(kernel_pkg "$1")
	mapfile -t opts < <(apt_for "$1")
	dir="$CACHE/$pkg"
	if [ ! -f "$dir/vmlinuz" ]; then
		# An older ABI of the same series is not needed any more.
		for old in "$CACHE"/linux-image-"$1".[0-9]*-cloud-amd64-unsigned; do
			if [ -d "$old" ] && [ "$old" != "$dir" ]; then
				rm -rf "$old"
			fi
		done
		mkdir -p "$dir"
		deb=$(find "$dir" -maxdepth 1 -name '*.deb' | head -1)
		if [ -z "$deb" ]; then
			log "downloading $pkg"
			# Stale package lists may name a file the mirror dropped: update once.
			download "$dir" "$pkg" "${opts[@]}" ||
				{ apt-get "${opts[@]}" update -qq >&2 && download "$dir" "$pkg" "${opts[@]}"; } ||
				die "apt-get download $pkg failed"
			deb=$(find "$dir" -maxdepth 1 -name '*.deb' | head -1)
		fi
		rm -rf "$dir/x"
		mkdir -p "$dir/x"
		dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$dir/x" --wildcards './boot/vmlinuz-*' './boot/config-*'
		grep -q '^CONFIG_DEBUG_INFO_BTF=y' "$dir"/x/boot/config-* || die "$pkg: kernel built without BTF"
		grep -q '^CONFIG_BPF_SYSCALL=y' "$dir"/x/boot/config-* || die "$pkg: kernel built without the bpf syscall"
		mv "$dir"/x/boot/config-* "$dir/config"
		mv "$dir"/x/boot/vmlinuz-* "$dir/vmlinuz.tmp"
		rm -rf "$dir/x" "$deb"
		mv "$dir/vmlinuz.tmp" "$dir/vmlinuz"
	fi
	echo "$dir/vmlinuz"
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
logs="$CACHE/logs"
mkdir -p "$logs"

# The initramfs: busybox, the static test binary, /init.
root="$work/root"
mkdir -p "$root"/{bin,sbin,dev,proc,sys,tmp,pipesnap}
cp /bin/busybox "$root/bin/busybox"
log "building the loader, pipestate and diagnose test binaries"
CGO_ENABLED=0 $GO test -c -o "$root/pipesnap/loader.test" ./loader
CGO_ENABLED=0 $GO test -c -o "$root/pipesnap/pipestate.test" ./pipestate
CGO_ENABLED=0 $GO test -c -o "$root/pipesnap/diagnose.test" ./diagnose
printf '%s\n' "$RUN" > "$root/pipesnap/run"
printf '%s\n' "$RUN_PIPESTATE" > "$root/pipesnap/run-pipestate"
printf '%s\n' "$RUN_DIAGNOSE" > "$root/pipesnap/run-diagnose"
cat > "$root/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t bpf bpf /sys/fs/bpf
mount -t tmpfs tmpfs /tmp
export CI=1 HOME=/tmp TMPDIR=/tmp
ulimit -n 65536	# as on the host: tests hold 20,000 fds
up() { read -r u _ < /proc/uptime; echo "$u"; }
{
	echo "pipesnap-vm: boot $(up) s; kernel $(uname -r); cmdline: $(cat /proc/cmdline)"
	if [ -r /sys/kernel/btf/vmlinux ]; then
		echo "pipesnap-vm: BTF at /sys/kernel/btf/vmlinux"
	else
		echo "pipesnap-vm: no /sys/kernel/btf/vmlinux"
	fi
	if grep -qw la57 /proc/cpuinfo; then
		echo "pipesnap-vm: paging 5-level"
	else
		echo "pipesnap-vm: paging 4-level"
	fi
	start=$(up)
	/pipesnap/loader.test -test.v -test.count=1 -test.short -test.timeout=8m \
		-test.run "$(cat /pipesnap/run)" </dev/null 2>&1
	rc=$?
	/pipesnap/pipestate.test -test.v -test.count=1 -test.short -test.timeout=4m \
		-test.run "$(cat /pipesnap/run-pipestate)" </dev/null 2>&1
	prc=$?
	[ $rc -ne 0 ] || rc=$prc
	/pipesnap/diagnose.test -test.v -test.count=1 -test.timeout=4m \
		-test.run "$(cat /pipesnap/run-diagnose)" </dev/null 2>&1
	drc=$?
	[ $rc -ne 0 ] || rc=$drc
	echo "pipesnap-vm: tests $start..$(up) s"
	echo "pipesnap-vm: exit $rc"
} > /dev/ttyS1 2>&1
sync
poweroff -f
EOF
chmod 755 "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet) > "$work/initramfs.cpio"

results=()
failed=0 passed=0
for cfg in "${configs[@]}"; do
	append='console=ttyS0 panic=-1 oops=panic quiet' cpu=max
	case $cfg in
	5.10) series=5.10 ;;
	6.1) series=6.1 ;;
	6.1-nokaslr) series=6.1 append="$append nokaslr" ;;
	6.1-4level) series=6.1 cpu=max,la57=off ;;
	6.12) series=6.12 ;;
	*) die "unknown config $cfg (5.10, 6.1, 6.1-nokaslr, 6.1-4level, 6.12)" ;;
	esac
	kernel=$(fetch_kernel "$series")
	out="$logs/$cfg.out" console="$logs/$cfg.console"
	rm -f "$out" "$console"
	log "=== $cfg: $(basename "$(dirname "$kernel")") (-cpu $cpu; $append)"
	t0=$(date +%s.%N)
	set +e
	timeout --kill-after=10 "$VM_TIMEOUT" qemu-system-x86_64 \
		-accel tcg -cpu "$cpu" -m 1024 -smp 2 \
		-kernel "$kernel" -initrd "$work/initramfs.cpio" -append "$append" \
		-display none -monitor none -no-reboot \
		-serial "file:$console" -serial "file:$out" </dev/null
	qrc=$?
	set -e
	touch "$out" "$console"
	t1=$(date +%s.%N)
	wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.0f", b-a}')
	sed -e 's/\r$//' "$out"
	status=$(sed -n 's/^pipesnap-vm: exit \([0-9]*\).*/\1/p' "$out" | tail -1)
	boot=$(sed -n 's/^pipesnap-vm: boot \([0-9.]*\) s.*/\1/p' "$out" | head -1)
	tests=$(sed -n 's/^pipesnap-vm: tests \([0-9.]*\)\.\.\([0-9.]*\) s.*/\1 \2/p' "$out" | awk '{printf "%.0f", $2-$1}')
	paging=$(sed -n 's/^pipesnap-vm: paging \([0-9]\)-level.*/\1/p' "$out" | head -1)
	source=$(grep -o 'translation from [a-z]*' "$out" | head -1 | awk '{print $3}' || true)
	verdict=PASS why=""
	if [ $qrc -eq 124 ] || [ $qrc -eq 137 ]; then
		verdict=FAIL why="timed out after ${VM_TIMEOUT}s"
	elif [ -z "$status" ]; then
		verdict=FAIL why="no exit status from the guest (qemu exit $qrc)"
	elif [ "$status" != 0 ]; then
		verdict=FAIL why="tests exited $status"
	elif ! grep -q '^pipesnap-vm: BTF at' "$out"; then
		verdict=FAIL why="no kernel BTF in the guest"
	elif ! grep -q '^--- PASS' "$out" || grep -q 'no tests to run' "$out"; then
		verdict=FAIL why="no test ran"
	fi
	if [ $verdict = PASS ]; then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
		if [ -s "$console" ]; then
			log "$cfg: last lines of the kernel console ($console):"
			tail -n 40 "$console" | sed -e 's/\r$//' -e 's/^/  | /' >&2 || true
		fi
	fi
	results+=("$(printf '%-4s %-12s boot %5ss  tests %4ss  total %4ss  translation %-8s  %s-level paging  %s  %s' \
		"$verdict" "$cfg" "${boot:-?}" "${tests:-?}" "$wall" "${source:-?}" "${paging:-?}" "$(basename "$(dirname "$kernel")")" "$why")")
done

echo
echo "test-kernels: results"
printf '  %s\n' "${results[@]}"
echo "test-kernels: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
