#!/usr/bin/env bash
# encryption.sh — the cost of encryption at rest (docs/erasure.md): esd with
# its default (events sealed with per-stream keys) against esd
# --no-encryption, side by side, the runs interleaved so that load from
# other processes on the machine falls on both alike.
#
#   tools/bench/encryption.sh [--runs N] [--duration SECONDS] [--sync full|none]
#
# Workloads (tools/esbench against an esd this script starts on port 0 in a
# temporary directory, removed at the end):
#   append-16    single-event appends of 200 bytes from 16 connections to
#                10,000 random streams, --duration seconds (events/s)
#   replay       read-stream: one 100,000-event stream read from the start
#                through the client library (events/s)
# Prints the median of --runs runs (default 3) of each, and off/on ratios.
# Needs the build in ./build.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
runs=3
duration=10
sync=full
while [ $# -gt 0 ]; do
    case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --sync) sync="$2"; shift 2 ;;
    *) echo "usage: $0 [--runs N] [--duration SECONDS] [--sync full|none]" >&2; exit 2 ;;
    esac
done
esd="$root/build/server/esd"
esbench="$root/build/tools/esbench"
tmp="$(mktemp -d)"
pid=
cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT

# start MODE: an esd with (on) or without (off) encryption, fresh directory.
start() {
    local dir="$tmp/$1-$RANDOM"
    local extra=()
    [ "$1" = off ] && extra=(--no-encryption)
    "$esd" --data-dir "$dir" --listen 127.0.0.1:0 --port-file "$dir.port" --sync "$sync" \
        "${extra[@]}" >"$dir.log" 2>&1 &
    pid=$!
    for _ in $(seq 200); do [ -s "$dir.port" ] && break; sleep 0.05; done
    [ -s "$dir.port" ] || { cat "$dir.log" >&2; exit 1; }
    addr="127.0.0.1:$(cat "$dir.port")"
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=; }

rate() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["events_per_sec"])'; }

declare -A res
for i in $(seq "$runs"); do
    for mode in on off; do
        start "$mode"
        a=$("$esbench" -s "$addr" append --connections 16 --threads 2 --duration "$duration" --json | rate)
        r=$("$esbench" -s "$addr" read-stream --events 100000 --json | rate)
        stop
        res[$mode-append]+="$a "
        res[$mode-replay]+="$r "
        echo "run $i $mode: append-16 $a/s, replay $r/s" >&2
    done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
printf '%-10s %14s %14s %8s\n' workload on off on/off
for w in append replay; do
    on=$(echo "${res[on-$w]}" | median)
    off=$(echo "${res[off-$w]}" | median)
    printf '%-10s %14s %14s %8s\n' "$w" "$on" "$off" "$(python3 -c "print(f'{$on/$off:.3f}')")"
done
