#!/usr/bin/env bash
# Dumps a live pipeline (a producer at full speed, a consumer at a varying
# pace) many times: no crash, no hang, no leaked fd or BPF program, every
# copy either a contiguous piece of the producer's stream or flagged torn.
# Prints the torn rate. Usage: scripts/stress.sh [RUNS]   (default 1000)
set -euo pipefail
cd "$(dirname "$0")/.."
PIPESNAP_LIVE_RUNS=${1:-1000} go test -count=1 -timeout 30m -run 'TestDumpLivePipe$' -v ./loader | grep -E 'torn|^(---|ok|FAIL)'
