#!/usr/bin/env bash
# encryption_profile.sh — where a replay's time goes with and without
# encryption at rest (docs/erasure.md "Cost"), counted in instructions by
# valgrind's callgrind, which the machine's load does not disturb (wall
# times on a shared machine move by tens of percent; instruction counts by
# well under one).
#
#   tools/bench/encryption_profile.sh [--events N] [--keep DIR]
#
# For each of on (the default: sealed with per-stream keys) and off
# (--no-encryption): an esd under callgrind on port 0 in a temporary
# directory, one stream of N events (default 20,000) written with esbench,
# read once to warm up, then the counters are zeroed (callgrind_control -z),
# the stream is read once more with esctl, and the counters dumped
# (callgrind_control -d). Prints the instructions per event of esd for that
# read, and for "on" the functions the difference goes to
# (callgrind_annotate, inclusive). --keep DIR keeps the callgrind files.
# Needs valgrind and the build in ./build.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
events=20000
keep=
while [ $# -gt 0 ]; do
    case "$1" in
    --events) events="$2"; shift 2 ;;
    --keep) keep="$2"; shift 2 ;;
    *) echo "usage: $0 [--events N] [--keep DIR]" >&2; exit 2 ;;
    esac
done
command -v valgrind >/dev/null || { echo "$0: needs valgrind" >&2; exit 1; }
build="$root/build"
tmp="$(mktemp -d)"
pid=
cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT

# profile MODE: prints the instructions per event of one read of the stream.
profile() {
    local mode="$1" dir="$tmp/$1" extra=()
    [ "$mode" = off ] && extra=(--no-encryption)
    mkdir -p "$dir"
    valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.$mode" \
        "$build/server/esd" --data-dir "$dir/data" --listen 127.0.0.1:0 \
        --port-file "$dir/port" --sync none "${extra[@]}" >"$dir/log" 2>&1 &
    pid=$!
    for _ in $(seq 600); do [ -s "$dir/port" ] && break; sleep 0.1; done
    [ -s "$dir/port" ] || { cat "$dir/log" >&2; exit 1; }
    local addr="127.0.0.1:$(cat "$dir/port")" stream
    "$build/tools/esbench" -s "$addr" read-stream --events "$events" --duration 0.001 \
        --json >/dev/null
    stream=$("$build/tools/esctl" -s "$addr" streams | grep -o 'replay-[0-9]*' | head -1)
    "$build/tools/esctl" -s "$addr" read "$stream" >/dev/null
    callgrind_control -z "$pid" >/dev/null 2>&1
    "$build/tools/esctl" -s "$addr" read "$stream" >/dev/null
    callgrind_control -d "$pid" >/dev/null 2>&1
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    pid=
    local ir
    ir=$(grep '^summary:' "$tmp/cg.$mode.1" | awk '{print $2}')
    echo "$mode: $((ir / events)) instructions per event"
}

profile on
profile off
echo "on: where the instructions go (inclusive, per event; the top 25 below the request's dispatch):"
callgrind_annotate --inclusive=yes --threshold=100 --auto=no "$tmp/cg.on.1" 2>/dev/null |
    sed -n '/file:function/,$p' | tail -n +3 |
    sed -E 's/^ *([0-9,]+) +\([^)]*\) +([^ ]+).*/\1 \2/; s/,//g; s#[^ ]*/(server|proto|client)/#\1/#' |
    awk -v n="$events" 'NF == 2 && !seen[$2]++ { printf "%8d  %s\n", $1 / n, $2 }' |
    sed -n '/store_read_stream/,$p' | head -25
if [ -n "$keep" ]; then
    mkdir -p "$keep"
    cp "$tmp"/cg.* "$keep"/
fi
