#!/usr/bin/env bash
# Fuzz the stream decoder: scripts/fuzz.sh [fuzztime], default 60s.
# Prints the last progress line (executions count); fails if the fuzzer does.
set -euo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
go test ./format -run '^$' -fuzz FuzzDecode -fuzztime "${1:-60s}" >"$log" 2>&1 || status=$?
if [ "$status" -ne 0 ]; then
	cat "$log"
	exit "$status"
fi
grep 'execs:' "$log" | tail -n 1
