#!/usr/bin/env bash
# scavenge_p99.sh — append latency at 16 connections with and without the
# scavenger removing 1,000,000 events, side by side on one esd.
#
#   tools/bench/scavenge_p99.sh [--runs N] [--duration SECONDS] [--fill EVENTS]
#                               [--slice STEPS] [--sync full|none]
#
# One esd (its own temporary directory, port 0, --sync full by default,
# --scavenge-slice STEPS, default esd's). Fill: 100-event appends to 10
# streams (bench-0..9) until --fill events (default 1,000,000) are stored.
# Then --runs runs (default 3) of `esbench append --connections 16` (single
# events to 10,000 random streams, bench-0..9999, the filled ones among
# them) of --duration seconds each: "without". Then the 10 filled streams
# are deleted (esctl stream delete) and the same runs are made while the
# scavenger removes them: "with"; `esctl db stat` before and after each run
# shows how many removed events were still unreclaimed (a run counts only if
# the scavenger was still at work when it ended). Prints each run and the
# medians of p50 and p99 of both, and their ratio.
# Needs the build in ./build.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
runs=3
duration=10
fill=1000000
slice=""
sync=full
while [ $# -gt 0 ]; do
    case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --fill) fill="$2"; shift 2 ;;
    --slice) slice="$2"; shift 2 ;;
    --sync) sync="$2"; shift 2 ;;
    -h | --help) sed -n '2,19s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "scavenge_p99.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done

b="$root/build"
work="$(mktemp -d /tmp/scavenge_p99.XXXXXX)"
esd_pid=""
cleanup() {
    if [ -n "$esd_pid" ]; then kill "$esd_pid" 2>/dev/null || true; wait "$esd_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

args=(--listen 127.0.0.1:0 --port-file "$work/port" --data-dir "$work/db" --sync "$sync")
[ -n "$slice" ] && args+=(--scavenge-slice "$slice")
"$b/server/esd" "${args[@]}" >"$work/esd.log" 2>&1 &
esd_pid=$!
for _ in $(seq 100); do [ -s "$work/port" ] && break; sleep 0.1; done
addr="127.0.0.1:$(cat "$work/port")"
echo "esd at $addr (sync $sync${slice:+, scavenge slice $slice})"

stored() { "$b/tools/esctl" --json db stat "$work/db" 2>/dev/null | sed -n 's/.*"event_count": *\([0-9]*\).*/\1/p'; }
unreclaimed() { "$b/tools/esctl" --json db stat "$work/db" 2>/dev/null | sed -n 's/.*"events_unreclaimed": *\([0-9]*\).*/\1/p'; }

# Fill 10 streams with 100-event appends.
while n="$(stored)"; [ "${n:-0}" -lt "$fill" ]; do
    "$b/tools/esbench" -s "$addr" append --connections 4 --batch 100 --streams 10 \
        --duration 5 --event-size 200 >/dev/null
done
echo "filled: $(stored) events stored (esbench head: $("$b/tools/esctl" -s "$addr" --json stats | sed -n 's/.*"head_position":\([0-9]*\).*/\1/p'))"

run() { # run LABEL: one esbench run; prints "p50 p99"
    "$b/tools/esbench" -s "$addr" append --connections 16 --streams 10000 --duration "$duration" \
        --json | sed -n 's/.*"p50_us":\([0-9]*\).*"p99_us":\([0-9]*\).*/\1 \2/p'
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

: >"$work/without"
for i in $(seq "$runs"); do
    r="$(run)"
    echo "without scavenge run $i: p50/p99 us $r"
    echo "$r" >>"$work/without"
done
for s in $(seq 0 9); do
    "$b/tools/esctl" -s "$addr" stream delete "bench-$s" >/dev/null
done
echo "deleted bench-0..9: $(unreclaimed) events to reclaim"
: >"$work/with"
for i in $(seq "$runs"); do
    before="$(unreclaimed)"
    r="$(run)"
    after="$(unreclaimed)"
    echo "with scavenge run $i: p50/p99 us $r (unreclaimed $before -> $after)"
    if [ "${after:-0}" -gt 0 ]; then echo "$r" >>"$work/with"; else
        echo "  (the scavenger finished during the run: not counted)"
    fi
done
w50="$(cut -d' ' -f1 "$work/without" | median)"; w99="$(cut -d' ' -f2 "$work/without" | median)"
if [ -s "$work/with" ]; then
    s50="$(cut -d' ' -f1 "$work/with" | median)"; s99="$(cut -d' ' -f2 "$work/with" | median)"
    echo "median without: p50 $w50 us p99 $w99 us; with: p50 $s50 us p99 $s99 us;" \
        "p99 ratio $(awk -v a="$s99" -v b="$w99" 'BEGIN {printf "%.2f", a / b}')"
else
    echo "median without: p50 $w50 us p99 $w99 us; no run ended while the scavenger worked"
fi
