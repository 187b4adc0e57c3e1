#!/usr/bin/env bash
# make bench: measures pipesnap's BPF dump against the user-space tee path
# and the /proc walk, and `pipesnap restore`'s refill against plain
# write(2), on workloads it creates and removes itself, and writes the
# results (bench/results.md; see bench/README.md).
#
# Environment (all optional):
#   BENCH_QUICK=1          small sizes, 3 repetitions, under a minute; writes
#                          $TMPDIR/pipesnap-bench-quick.md, not bench/results.md
#   BENCH_REPS=N           timed runs per case (default 10)
#   BENCH_META=1000,10000  pipe counts of the metadata scan
#   BENCH_DATA=1000x4096,1000x65536,64x1048576
#                          PIPESxBYTES of the dump and restore cases (at most
#                          1 MiB a pipe; restore takes the first process's pipes)
#   BENCH_PIPES_PER_PROC=1000
#                          pipes per workload process (each holds 2 fds a pipe
#                          and must stay under RLIMIT_NOFILE's hard limit)
#   BENCH_TMPFS=/dev/shm   where the "output to a file on tmpfs" cases and the
#                          snapshot the restore cases read are written
#   BENCH_OUT=FILE         where the results go
#   BENCH_NO_PIPELINE=1    skip the seq | gzip | sleep case
#   BENCH_SCALE=100000     empty pipes of the scale case (0: none; quick: 2000)
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
if [ "$(id -u)" -ne 0 ]; then
	echo "bench: pipesnap dump needs root: sudo make bench" >&2
	exit 1
fi
if [ ! -e /sys/kernel/btf/vmlinux ]; then
	echo "bench: pipesnap dump needs kernel BTF (/sys/kernel/btf/vmlinux)" >&2
	exit 1
fi
if ! command -v seq >/dev/null || ! command -v gzip >/dev/null; then
	echo "bench: seq or gzip missing: skipping the pipeline case" >&2
	export BENCH_NO_PIPELINE=1
fi
[ -x /usr/bin/time ] || echo "bench: /usr/bin/time missing (apt-get install time): peak RSS not measured" >&2
mkdir -p bin
# As make builds it: without urfave/cli's man page generator (Makefile).
"$GO" build -tags=urfave_cli_no_docs -o bin/pipesnap ./cmd/pipesnap
"$GO" build -o bin/pipesnap-tee ./cmd/pipesnap-tee
"$GO" build -o bin/pipesnap-bench ./bench/cmd/pipesnap-bench
exec bin/pipesnap-bench run
