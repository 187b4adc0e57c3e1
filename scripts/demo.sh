#!/usr/bin/env bash
# The demo: starts a stuck pipeline of its own (seq | gzip | a consumer that
# never reads), snapshots its pipes, shows what is in them, and stops
# exactly the processes it started.
set -euo pipefail
bin=${1:-bin/pipesnap}
if [ "$(id -u)" -ne 0 ]; then
	echo "demo: pipesnap dump needs root: run sudo make demo" >&2
	exit 1
fi
dir=$(mktemp -d)
pids=()
cleanup() {
	[ ${#pids[@]} -gt 0 ] && kill "${pids[@]}" 2>/dev/null || true
	rm -rf "$dir"
}
trap cleanup EXIT

( seq 1 10000000 | gzip -1 | sleep 600 ) &
sub=$!
pids+=("$sub")
sleep 1
read -r -a kids < "/proc/$sub/task/$sub/children" || true  # no trailing newline
pids+=("${kids[@]}")
echo "demo: stuck pipeline seq | gzip | sleep: pids ${kids[*]}"

args=()
for p in "${kids[@]}"; do args+=(--pid "$p"); done
# show prints a command as typed, then runs it (no shell trace: only the
# demo's own commands are shown).
show() {
	printf '\n$ pipesnap'
	printf ' %q' "${@:2}"
	printf '\n'
	"$@"
}
show "$bin" dump "${args[@]}" -o "$dir/stuck.snap"
show "$bin" inspect "$dir/stuck.snap"
show "$bin" diagnose "${args[@]}" || true   # exit 1: something is stuck
ino=$("$bin" inspect --json "$dir/stuck.snap" | grep -m1 '"ino"' | tr -dc 0-9)
printf '\n$ pipesnap cat --ino %s %q | head -c 64 | od -An -c\n' "$ino" "$dir/stuck.snap"
"$bin" cat --ino "$ino" "$dir/stuck.snap" | head -c 64 | od -An -c | head -4
