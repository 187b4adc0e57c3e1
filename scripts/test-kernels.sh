#!/usr/bin/env bash
# Runs the BPF tests of loader/ (dump), pipestate/ (ls, diagnose), diagnose/ (the
# scenarios of internal/pipetest/scenarios.go) and cmd/pipesnap/ (the command
# line, a selection) on Debian's kernels in QEMU (no KVM):
# Debian 11's 5.10 and Debian 12's 6.1 and 6.12 on x86_64, Debian 12's 6.12
# on arm64.
#
#   scripts/test-kernels.sh [CONFIG...]
#
# CONFIG, all seven by default:
#   5.10         Debian 11's 5.10, KASLR on, 4-level paging: no bpf_loop, no
#                bpf_d_path in iterators, no pid-scoped iterators, wchan
#                always 0, BPF memory charged to RLIMIT_MEMLOCK (the
#                programs' variant without bpf_loop, bpf/compat.h)
#   6.1          Debian 12's 6.1, KASLR on (bases randomized)
#   6.1-nokaslr  the same kernel booted with nokaslr
#   6.1-4level   6.1, KASLR on, on a CPU without LA57: 4-level paging
#   6.12         the 6.12 kernel of Debian 12's security suite
#   arm64        its arm64 build (52-bit VA) on -M virt -cpu max, which has
#                LPA2: 52-bit VA, 5 levels, KASLR
#   arm64-48bit  the same on -cpu cortex-a72 (no LPA2, 44-bit PA): 48-bit
#                VA, 4 levels, KASLR with the linear map randomized too
#                (memstart_addr lowered by the 52-bit fallback and moved)
# The x86_64 ones run on -cpu max, which has LA57: the 6.x kernels use
# 5-level paging, whose direct map and vmemmap sit elsewhere (5.10's is
# built without it). arm64's test binaries are cross-built (GOARCH=arm64)
# and run with the busybox of Debian's busybox-static:arm64, extracted,
# not installed.
#
# Kernels come from Debian's packages (linux-image-*-cloud-amd64-unsigned
# and -cloud-arm64-unsigned, the newest ABI apt-cache knows of, or
# KERNEL_5_10 / KERNEL_6_1 / KERNEL_6_12 / KERNEL_ARM64 to pin a package
# name) and are cached in .cache/test-kernels/. Debian 11's (bullseye) and
# the arm64 ones come through package lists of their own in
# .cache/test-kernels/apt-bullseye/ and apt-bookworm-arm64/: the system's
# apt sources and lists are left as they are. The test binaries are built statically and packed
# with busybox into an initramfs whose /init
# mounts proc, sysfs, devtmpfs, bpffs and a tmpfs on /tmp, runs the tests
# with CI=1 (so they cannot skip) and writes their output and exit status
# to the second serial port (x86_64) or a virtio console (arm64). Each VM is killed after TEST_KERNELS_TIMEOUT
# seconds (default 600). Each VM's output and console go to
# TEST_KERNELS_LOGS/CONFIG.out and .console (default the cache's logs/;
# give each run its own where several share one cache). Exits non-zero if
# any config failed.
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
RUN=${TEST_KERNELS_RUN:-'^(TestCalibrationVerifies|TestCalibrationSources|TestExplainMissingFindsNothingHere|TestVariantAgreesWithProbes|TestScopedWalkOfExitedPid|TestWrongTranslationReadsNothing|TestDumpKinds|TestDumpKindsWithoutNewerHelpers|TestDumpLeavesNothing|TestDumpLivePipe|TestDumpLivePipeFrozen|TestDumpManyPipes|TestDumpBulk|TestDumpCgroups|TestDumpCgroupsTruncated)$'}
# pipestate/'s BPF tests: who is blocked, read from the wait queues, with
# and without the wake functions from kallsyms; the walk's records with
# many waiters, a pipe at several fds, FIFO paths (5.10: from /proc).
RUN_PIPESTATE=${TEST_KERNELS_RUN_PIPESTATE:-'^(TestStuckPipelines|TestBlockedOutsideWalk|TestAll|TestNothingLeaks|TestWakeFuncsNotNeeded|TestWakeFuncsNeeded|TestEpollWaiter|TestOpenWaits|TestWaitDurations|TestCgroups|TestManyWaiters|TestSamePipeManyFDs|TestFIFOPath)$'}
# diagnose/'s: every scenario on a live walk.
RUN_DIAGNOSE=${TEST_KERNELS_RUN_DIAGNOSE:-'^TestScenariosLive$'}
# cmd/pipesnap's, on the pipesnap binary built for the VM
# (PIPESNAP_TEST_BIN): dump, inspect and cat of a stuck pipe; every
# method; a dump into a pipe it dumps; restore of a stuck pipeline; ls
# and diagnose of stuck pipelines.
RUN_CMD=${TEST_KERNELS_RUN_CMD:-'^(TestDumpInspectCat|TestDumpMethods|TestDumpIntoDumpedPipe|TestRestoreStuckPipeline|TestLsStuckPipelines|TestDiagnoseStuckPipelines)$'}
configs=("$@")
[ ${#configs[@]} -gt 0 ] || configs=(5.10 6.1 6.1-nokaslr 6.1-4level 6.12 arm64 arm64-48bit)
. scripts/debian-apt.sh

log() { echo "test-kernels: $*" >&2; }
die() { log "$*"; exit 1; }

# Host tools, from Debian's packages.
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v qemu-system-aarch64 >/dev/null || need+=(qemu-system-arm)
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || need+=(busybox-static)
command -v cpio >/dev/null || need+=(cpio)
if [ ${#need[@]} -gt 0 ]; then
	[ "$(id -u)" -eq 0 ] || die "missing ${need[*]}: run as root, or: sudo apt-get install ${need[*]}"
	log "installing ${need[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# apt_for SERIES: the options that make apt-get and apt-cache use the
# package lists that carry SERIES: the system's for Debian 12's x86_64
# kernels, a bullseye source list and lists of their own for 5.10,
# bookworm's arm64 ones for arm64.
apt_for() {
	case $1 in
	5.10) debian_apt_opts "$CACHE/apt-bullseye" amd64 'deb http://deb.debian.org/debian bullseye main' ;;
	arm64) debian_bookworm_arm64 "$CACHE/apt-bookworm-arm64" ;;
	esac
}

# kernel_pkg SERIES: the package to test, the newest ABI Debian lists.
kernel_pkg() {
	local re pin opts
	case $1 in
	5.10) re='^linux-image-5\.10\.0-[0-9]+-cloud-amd64-unsigned$' pin=${KERNEL_5_10:-} ;;
	6.1) re='^linux-image-6\.1\.0-[0-9]+-cloud-amd64-unsigned$' pin=${KERNEL_6_1:-} ;;
	6.12) re='^linux-image-6\.12\.[0-9]+\+deb12-cloud-amd64-unsigned$' pin=${KERNEL_6_12:-} ;;
	arm64) re='^linux-image-6\.12\.[0-9]+\+deb12-cloud-arm64-unsigned$' pin=${KERNEL_ARM64:-} ;;
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

# kernel_arch SERIES: the Debian architecture of its kernel.
kernel_arch() { if [ "$1" = arm64 ]; then echo arm64; else echo amd64; fi; }

# fetch_kernel SERIES: prints the path of the cached vmlinuz.
fetch_kernel() {
	local pkg deb dir old opts
	pkg=$(kernel_pkg "$1")
	mapfile -t opts < <(apt_for "$1")
	dir="$CACHE/$pkg"
	if [ ! -f "$dir/vmlinuz" ]; then
		# An older ABI of the same series is not needed any more.
		for old in "$CACHE"/linux-image-"${1/arm64/6.12}".[0-9]*-cloud-"$(kernel_arch "$1")"-unsigned; do
			if [ -d "$old" ] && [ "$old" != "$dir" ]; then
				rm -rf "$old"
			fi
		done
		mkdir -p "$dir"
		deb=$(find "$dir" -maxdepth 1 -name '*.deb' | head -1)
		if [ -z "$deb" ]; then
			log "downloading $pkg"
			debian_download "$dir" "$pkg" "${opts[@]}" || die "apt-get download $pkg failed"
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
logs=${TEST_KERNELS_LOGS:-$CACHE/logs}
mkdir -p "$logs"

# busybox_arm64: prints the path of an arm64 busybox, from Debian's
# busybox-static:arm64, extracted into the cache (not installed).
busybox_arm64() {
	local dir=$CACHE/busybox-arm64 opts
	if [ ! -x "$dir/busybox" ]; then
		mapfile -t opts < <(apt_for arm64)
		rm -rf "$dir" && mkdir -p "$dir/x"
		log "downloading busybox-static:arm64"
		debian_download "$dir" busybox-static "${opts[@]}" || die "apt-get download busybox-static (arm64) failed"
		dpkg-deb -x "$dir"/busybox-static_*.deb "$dir/x"
		mv "$dir/x/bin/busybox" "$dir/busybox"
		rm -rf "$dir/x" "$dir"/*.deb
	fi
	echo "$dir/busybox"
}

# initramfs ARCH (amd64, arm64): builds, once, the initramfs of busybox,
# the static test binaries and /init for ARCH, and prints its path.
initramfs() {
	local arch=$1 root=$work/root-$1 cpio=$work/initramfs-$1.cpio
	if [ -f "$cpio" ]; then
		echo "$cpio"
		return
	fi
	mkdir -p "$root"/{bin,sbin,dev,proc,sys,tmp,pipesnap}
	if [ "$arch" = arm64 ]; then
		cp "$(busybox_arm64)" "$root/bin/busybox"
		echo /dev/hvc0 > "$root/pipesnap/out"
	else
		cp /bin/busybox "$root/bin/busybox"
		echo /dev/ttyS1 > "$root/pipesnap/out"
	fi
	log "building pipesnap and the loader, pipestate, diagnose and cmd/pipesnap test binaries for $arch"
	local p
	for p in loader pipestate diagnose cmd/pipesnap; do
		CGO_ENABLED=0 GOOS=linux GOARCH=$arch $GO test -c -o "$root/pipesnap/${p#*/}.test" ./$p >&2
	done
	CGO_ENABLED=0 GOOS=linux GOARCH=$arch $GO build -o "$root/pipesnap/pipesnap" ./cmd/pipesnap >&2
	printf '%s\n' "$RUN" > "$root/pipesnap/run"
	printf '%s\n' "$RUN_PIPESTATE" > "$root/pipesnap/run-pipestate"
	printf '%s\n' "$RUN_DIAGNOSE" > "$root/pipesnap/run-diagnose"
	printf '%s\n' "$RUN_CMD" > "$root/pipesnap/run-cmd"
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
	if [ "$(uname -m)" != x86_64 ]; then
		echo "pipesnap-vm: arch $(uname -m)"
	elif grep -qw la57 /proc/cpuinfo; then
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
	PIPESNAP_TEST_BIN=/pipesnap/pipesnap /pipesnap/pipesnap.test -test.v -test.count=1 -test.timeout=4m \
		-test.run "$(cat /pipesnap/run-cmd)" </dev/null 2>&1
	crc=$?
	[ $rc -ne 0 ] || rc=$crc
	echo "pipesnap-vm: tests $start..$(up) s"
	echo "pipesnap-vm: exit $rc"
} > "$(cat /pipesnap/out)" 2>&1
sync
poweroff -f
EOF
	chmod 755 "$root/init"
	(cd "$root" && find . | cpio -o -H newc --quiet) > "$cpio"
	echo "$cpio"
}

results=()
failed=0 passed=0
for cfg in "${configs[@]}"; do
	append='console=ttyS0 panic=-1 oops=panic quiet' cpu=max arch=amd64
	case $cfg in
	5.10) series=5.10 ;;
	6.1) series=6.1 ;;
	6.1-nokaslr) series=6.1 append="$append nokaslr" ;;
	6.1-4level) series=6.1 cpu=max,la57=off ;;
	6.12) series=6.12 ;;
	# pauth-impdef: QEMU's own pointer-authentication hash, much faster
	# under TCG than the architected one; the kernel cannot tell.
	arm64) series=arm64 arch=arm64 cpu=max,pauth-impdef=on ;;
	arm64-48bit) series=arm64 arch=arm64 cpu=cortex-a72 ;;
	*) die "unknown config $cfg (5.10, 6.1, 6.1-nokaslr, 6.1-4level, 6.12, arm64, arm64-48bit)" ;;
	esac
	kernel=$(fetch_kernel "$series")
	initrd=$(initramfs "$arch")
	out="$logs/$cfg.out" console="$logs/$cfg.console"
	rm -f "$out" "$console"
	if [ "$arch" = arm64 ]; then
		append=${append/console=ttyS0/console=ttyAMA0}
		qemu=(qemu-system-aarch64 -M virt -serial "file:$console"
			-device virtio-serial-pci -chardev "file,id=out,path=$out" -device virtconsole,chardev=out)
	else
		qemu=(qemu-system-x86_64 -serial "file:$console" -serial "file:$out")
	fi
	log "=== $cfg: $(basename "$(dirname "$kernel")") (-cpu $cpu; $append)"
	t0=$(date +%s.%N)
	set +e
	timeout --kill-after=10 "$VM_TIMEOUT" "${qemu[@]}" \
		-accel tcg -cpu "$cpu" -m 1024 -smp 2 \
		-kernel "$kernel" -initrd "$initrd" -append "$append" \
		-display none -monitor none -no-reboot </dev/null
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
	mm="${paging:-?}-level paging"
	if [ "$arch" = arm64 ]; then
		# The VA size shows in the linear map's addresses: 0xfff0... is
		# 52-bit, 0xffff0... 48-bit. The calibrated range is centred on
		# the probe's page.
		read -r dm span < <(sed -n 's/.*translation from [a-z]*:.*direct map \(0x[0-9a-f]*\) (+\(0x[0-9a-f]*\)).*/\1 \2/p' "$out" | head -1) || true
		mm="?-bit VA"
		if [ -n "${dm:-}" ]; then
			mid=$(printf '%x' $((dm + span / 2)))
			ones=${mid%%[0-9a-e]*}
			mm="$((64 - 4 * ${#ones}))-bit VA"
		fi
	fi
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
	results+=("$(printf '%-4s %-12s boot %5ss  tests %4ss  total %4ss  translation %-8s  %-15s  %s  %s' \
		"$verdict" "$cfg" "${boot:-?}" "${tests:-?}" "$wall" "${source:-?}" "$mm" "$(basename "$(dirname "$kernel")")" "$why")")
done

echo
echo "test-kernels: results"
printf '  %s\n' "${results[@]}"
echo "test-kernels: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
