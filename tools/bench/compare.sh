#!/usr/bin/env bash
# compare.sh — esd against PostgreSQL 15 and Redis 7 on this machine, one
# after the other, the same workloads, all durable.
#
#   tools/bench/compare.sh [--runs N] [--duration SECONDS] [--only esd|pg|redis]...
#                          [--sync-methods "journal lmdb nometasync"]
#
# Workloads (200-byte events, each append to a random stream out of 10,000
# unless said otherwise):
#   append-1, append-16, append-64   single-event appends from 1/16/64
#                                    connections (throughput, p50/p99 latency)
#   append-100x16                    esd only: 100-event appends, 16 connections
#   replay-100k                      read one 100,000-event stream from the start
#                                    through a real client
#   catchup-1m                       esd only: catch-up subscription of 1,000,000
#                                    events (sync none for the fill, durable esd)
#
# The peers, as a user who says "just use PostgreSQL/Redis" would build them:
#   PostgreSQL 15: events(position bigserial, stream, version, type, data) with
#     unique (stream, version); append_event() takes pg_advisory_xact_lock on the
#     stream, reads the current version, checks the expectation (any here, as
#     esbench's default) and inserts; synchronous_commit = on, fsync = on.
#     Driven by pgbench -M prepared with a custom script; the replay is the
#     faster of one SELECT ... ORDER BY version of the whole stream and
#     keyset pages of 4,096 rows, through libpq.
#   Redis 7 Streams: a Lua script takes XLEN as the stream's version, checks the
#     expectation and XADDs; appendonly yes, appendfsync always. Driven by
#     redis-benchmark (EVALSHA, __rand_int__ keys); the replay is the faster of
#     one XRANGE of the whole stream and XRANGE ... COUNT 4096 pages.
#   esd: tools/esbench (its own esd in a temporary directory, --sync full).
#     --sync-methods runs esd once per --sync-method in each run, side by
#     side (the first is the table's esd; the others get their own lines
#     and their ratio to the first): journal (the default), lmdb (LMDB's
#     two-sync commit, the path before the journal), nometasync.
#
# The peers are installed from Debian packages if missing, each started on a
# free loopback port in a temporary directory and stopped at the end; nothing
# else running on the machine is touched. Every figure is the median of
# --runs runs (default 3); the table ends with the ratios esd/peer.
# Needs the build in ./build (tools/dev.sh test or meson compile -C build).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
runs=3
duration=10
only=()
methods=(journal)
esbench="$root/build/tools/esbench"

usage() { sed -n '2,35s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

while [ $# -gt 0 ]; do
    case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --only) only+=("$2"); shift 2 ;;
    --esbench) esbench="$2"; shift 2 ;;
    --sync-methods) read -r -a methods <<<"$2"; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "compare.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
case "$runs" in '' | *[!0-9]* | 0) echo "compare.sh: --runs wants a positive integer" >&2; exit 2 ;; esac
case "$duration" in '' | *[!0-9]* | 0) echo "compare.sh: --duration wants whole seconds" >&2; exit 2 ;; esac

want() { # want SYSTEM: true when SYSTEM is to be measured
    [ ${#only[@]} -eq 0 ] && return 0
    local o
    for o in "${only[@]}"; do [ "$o" = "$1" ] && return 0; done
    return 1
}

say() { printf '==> %s\n' "$*" >&2; }

# ------------------------------------------------------------ packages --

PGBIN=/usr/lib/postgresql/15/bin
install_peers() {
    local need=()
    want pg && { [ -x "$PGBIN/postgres" ] && [ -x "$PGBIN/pgbench" ] || need+=(postgresql-15 postgresql-client-15); }
    want redis && { command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null || need+=(redis-server redis-tools); }
    [ ${#need[@]} -eq 0 ] && return 0
    say "installing ${need[*]}"
    # Keep the packages' own services from starting (no systemd here, but
    # invoke-rc.d would run the init scripts): we start our own instances.
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && made_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >&2 || {
        [ $made_policy = 1 ] && rm -f "$policy"
        return 1
    }
    [ $made_policy = 1 ] && rm -f "$policy"
    return 0
}

# ------------------------------------------------------------- helpers --

tmp="$(mktemp -d /tmp/es-compare.XXXXXX)"
chmod 755 "$tmp" # PostgreSQL runs as the postgres user
started_pids=()
cleanup() {
    local p
    for p in "${started_pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${started_pids[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null || true
    done
    rm -rf "$tmp"
}
trap cleanup EXIT

free_port() { # a loopback port nobody listens on now
    local p
    while :; do
        p=$((20000 + RANDOM % 20000))
        (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null || { echo "$p"; return; }
    done
}

median() { # median of the numbers on stdin (one a line)
    sort -g | awk '{v[NR]=$1} END {if (NR==0) {print "nan"; exit} if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'
}

json_num() { # json_num KEY < one-line JSON
    grep -o "\"$1\":[0-9.eE+-]*" | head -1 | cut -d: -f2
}

payload="$(head -c 200 /dev/zero | tr '\0' 'x')"
declare -A R # R[system,workload,metric,run]

record() { R["$1,$2,$3,$4"]="$5"; }

# ----------------------------------------------------------------- esd --

esd_for() { # esd_for METHOD: an esd that runs with --sync-method METHOD
    local w="$tmp/esd-$1"
    if [ ! -x "$w" ]; then
        printf '#!/bin/sh\nexec "%s" "$@" --sync-method %s\n' "$(dirname "$esbench")/../server/esd" "$1" >"$w"
        chmod +x "$w"
    fi
    echo "$w"
}

bench_esd() { # bench_esd RUN METHOD SYSTEM
    local run=$1 sys=$3 w c out esd
    esd="$(esd_for "$2")"
    for c in 1 16 64; do
        w=append-$c
        say "$sys $w (run $run)"
        out="$(timeout $((duration + 120)) "$esbench" append --esd "$esd" --connections $c --duration "$duration" --json </dev/null)"
        record "$sys" $w eps $run "$(json_num events_per_sec <<<"$out")"
        record "$sys" $w p50 $run "$(json_num p50_us <<<"$out")"
        record "$sys" $w p99 $run "$(json_num p99_us <<<"$out")"
        record "$sys" $w batch $run "$(json_num mean_commit_batch <<<"$out")"
    done
    say "$sys append-100x16 (run $run)"
    out="$(timeout $((duration + 120)) "$esbench" append --esd "$esd" --connections 16 --batch 100 --duration "$duration" --json </dev/null)"
    record "$sys" append-100x16 eps $run "$(json_num events_per_sec <<<"$out")"
    say "$sys replay-100k (run $run)"
    out="$(timeout 300 "$esbench" read-stream --esd "$esd" --events 100000 --duration "$duration" --json </dev/null)"
    record "$sys" replay-100k eps $run "$(json_num events_per_sec <<<"$out")"
    [ "$sys" = esd ] || return 0 # the catch-up reads what a --sync none fill wrote
    say "$sys catchup-1m (run $run)"
    out="$(timeout 600 "$esbench" subscribe --esd "$esd" --events 1000000 --duration 2 --json </dev/null)"
    record "$sys" catchup-1m eps $run "$(json_num events_per_sec <<<"$out")"
}

# ---------------------------------------------------------- PostgreSQL --

pg_port=""
start_pg() {
    local dir="$tmp/pg"
    mkdir -p "$dir" && chown postgres: "$dir"
    pg_port="$(free_port)"
    runuser -u postgres -- "$PGBIN/initdb" -D "$dir/data" -A trust -U postgres >/dev/null
    # Durable like esd --sync full: fsync and synchronous_commit on (the
    # defaults, stated). Room for 64 clients; shared_buffers large enough to
    # hold the table (the defaults' 128 MB would also do for these sizes).
    runuser -u postgres -- "$PGBIN/postgres" -D "$dir/data" -p "$pg_port" -k "$dir" \
        -c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=on \
        -c full_page_writes=on -c max_connections=100 -c shared_buffers=512MB \
        >"$dir/log" 2>&1 &
    started_pids+=($!)
    for _ in $(seq 100); do
        "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$pg_port" && break
        sleep 0.1
    done
    psql_pg -q <<'SQL'
CREATE TABLE events (
    position bigserial PRIMARY KEY,
    stream   text   NOT NULL,
    version  bigint NOT NULL,
    type     text   NOT NULL,
    data     bytea  NOT NULL,
    UNIQUE (stream, version)
);
-- expected: -1 = any, otherwise the stream's current version (-1 = empty
-- stream is written as expected 'no stream' = -2 here, not used by the bench).
CREATE FUNCTION append_event(p_stream text, p_expected bigint, p_type text, p_data bytea)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE cur bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext(p_stream));
    SELECT coalesce(max(version), -1) INTO cur FROM events WHERE stream = p_stream;
    IF p_expected <> -1 AND cur <> p_expected THEN
        RAISE EXCEPTION 'wrong expected version: stream % is at %, expected %',
            p_stream, cur, p_expected USING ERRCODE = '40001';
    END IF;
    INSERT INTO events (stream, version, type, data) VALUES (p_stream, cur + 1, p_type, p_data);
    RETURN cur + 1;
END $$;
SQL
}

psql_pg() { psql -X -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }

pg_percentiles() { # pg_percentiles LOGPREFIX -> "p50 p99" in us from pgbench -l logs
    cat "$1".* | awk '{print $3}' | sort -n | awk '{v[NR]=$1} END {
        if (NR==0) {print "nan nan"; exit}
        i50=int(NR*0.50); if (i50<1) i50=1; i99=int(NR*0.99); if (i99<1) i99=1;
        print v[i50], v[i99]}'
}

bench_pg() { # bench_pg RUN
    local run=$1 c out pcts
    cat >"$tmp/append.sql" <<SQL
\set s random(1, 10000)
SELECT append_event('account-' || :s, -1, 'Deposited', '\\x$(printf '%s' "$payload" | od -An -v -tx1 | tr -d ' \n')'::bytea);
SQL
    for c in 1 16 64; do
        say "PostgreSQL append-$c (run $run)"
        rm -f "$tmp"/pglog.*
        out="$(cd "$tmp" && pgbench -n -M prepared -c $c -j 2 -T "$duration" -f "$tmp/append.sql" \
            -l --log-prefix="$tmp/pglog" -h 127.0.0.1 -p "$pg_port" -U postgres postgres 2>&1 || true)"
        record pg append-$c eps $run "$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out" | head -1)"
        pcts="$(pg_percentiles "$tmp/pglog")"
        record pg append-$c p50 $run "${pcts% *}"
        record pg append-$c p99 $run "${pcts#* }"
    done
    say "PostgreSQL replay-100k (run $run)"
    if [ "$run" = 1 ]; then
        psql_pg -q -c "INSERT INTO events (stream, version, type, data)
            SELECT 'replay', g - 1, 'Deposited', convert_to(repeat('x', 200), 'UTF8')
            FROM generate_series(1, 100000) g" >/dev/null
        psql_pg -q -c "VACUUM ANALYZE events" >/dev/null
    fi
    # The faster of one query for the whole stream and pages of 4,096 rows
    # (keyset: version >= a random start), as esd's reads are paged.
    echo "SELECT version, type, data FROM events WHERE stream = 'replay' ORDER BY version;" >"$tmp/replay.sql"
    printf '%s\n' '\set v random(0, 95903)' \
        "SELECT version, type, data FROM events WHERE stream = 'replay' AND version >= :v ORDER BY version LIMIT 4096;" \
        >"$tmp/replay-page.sql"
    local tps whole page
    out="$(pgbench -n -M prepared -c 1 -t 5 -f "$tmp/replay.sql" -h 127.0.0.1 -p "$pg_port" -U postgres postgres 2>&1 || true)"
    tps="$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out" | head -1)"
    whole="$(awk -v t="$tps" 'BEGIN{printf "%.0f", t*100000}')"
    out="$(pgbench -n -M prepared -c 1 -t 100 -f "$tmp/replay-page.sql" -h 127.0.0.1 -p "$pg_port" -U postgres postgres 2>&1 || true)"
    tps="$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out" | head -1)"
    page="$(awk -v t="$tps" 'BEGIN{printf "%.0f", t*4096}')"
    record pg replay-100k eps $run "$(awk -v a="$whole" -v b="$page" 'BEGIN{print (a>b)?a:b}')"
}

# --------------------------------------------------------------- Redis --

redis_port=""
redis_sha=""
start_redis() {
    local dir="$tmp/redis"
    mkdir -p "$dir"
    redis_port="$(free_port)"
    redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$dir" --appendonly yes \
        --appendfsync always --save "" --daemonize no --protected-mode no \
        --logfile "$dir/log" &
    started_pids+=($!)
    for _ in $(seq 100); do
        redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
        sleep 0.1
    done
    # KEYS[1] the stream, ARGV[1] expected version (-1 = any), ARGV[2] type,
    # ARGV[3] data. The version is the stream's length (streams are never
    # trimmed), so the check and the XADD run atomically in the script.
    redis_sha="$(redis-cli -p "$redis_port" SCRIPT LOAD "
        local cur = redis.call('XLEN', KEYS[1]) - 1
        local exp = tonumber(ARGV[1])
        if exp ~= -1 and exp ~= cur then
            return redis.error_reply('WRONGVERSION stream is at ' .. cur)
        end
        redis.call('XADD', KEYS[1], '*', 'type', ARGV[2], 'data', ARGV[3])
        return cur + 1")"
}

bench_redis() { # bench_redis RUN
    local run=$1 c n out
    for c in 1 16 64; do
        # redis-benchmark counts requests, not seconds: size each run from a
        # one-second probe so it lasts about --duration seconds.
        out="$(redis-benchmark -p "$redis_port" -c $c -n $((c * 200)) -r 10000 --csv \
            EVALSHA "$redis_sha" 1 "account-__rand_int__" -1 Deposited "$payload" 2>/dev/null | tail -1)"
        n="$(awk -F'","' -v d="$duration" '{gsub(/"/,"",$2); printf "%d", $2*d}' <<<"$out")"
        [ "$n" -ge $((c * 10)) ] 2>/dev/null || n=$((c * 100))
        say "Redis append-$c (run $run, $n requests)"
        out="$(redis-benchmark -p "$redis_port" -c $c -n "$n" -r 10000 --csv \
            EVALSHA "$redis_sha" 1 "account-__rand_int__" -1 Deposited "$payload" 2>/dev/null | tail -1)"
        # "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
        record redis append-$c eps $run "$(awk -F'","' '{gsub(/"/,"",$2); print $2}' <<<"$out")"
        record redis append-$c p50 $run "$(awk -F'","' '{printf "%.0f", $5*1000}' <<<"$out")"
        record redis append-$c p99 $run "$(awk -F'","' '{printf "%.0f", $7*1000}' <<<"$out")"
    done
    say "Redis replay-100k (run $run)"
    if [ "$run" = 1 ]; then
        redis-cli -p "$redis_port" EVAL "
            for i = 1, 100000 do
                redis.call('XADD', KEYS[1], '*', 'type', 'Deposited', 'data', ARGV[1])
            end
            return redis.call('XLEN', KEYS[1])" 1 replay "$payload" >/dev/null
    fi
    # The faster of one XRANGE of the whole stream and pages of 4,096
    # entries (XRANGE ... COUNT 4096: the first page, repeated).
    local whole page
    out="$(redis-benchmark -p "$redis_port" -c 1 -n 10 --csv XRANGE replay - + 2>/dev/null | tail -1)"
    whole="$(awk -F'","' '{gsub(/"/,"",$2); printf "%.0f", $2*100000}' <<<"$out")"
    out="$(redis-benchmark -p "$redis_port" -c 1 -n 200 --csv XRANGE replay - + COUNT 4096 2>/dev/null | tail -1)"
    page="$(awk -F'","' '{gsub(/"/,"",$2); printf "%.0f", $2*4096}' <<<"$out")"
    record redis replay-100k eps $run "$(awk -v a="$whole" -v b="$page" 'BEGIN{print (a>b)?a:b}')"
}

# ---------------------------------------------------------------- main --

[ -x "$esbench" ] || { echo "compare.sh: $esbench not built (run tools/dev.sh test or meson compile -C build)" >&2; exit 1; }
install_peers
want pg && start_pg
want redis && start_redis

for run in $(seq "$runs"); do
    if want esd; then
        for m in "${methods[@]}"; do
            if [ "$m" = "${methods[0]}" ]; then bench_esd "$run" "$m" esd; else bench_esd "$run" "$m" "esd-$m"; fi
        done
    fi
    want pg && bench_pg "$run"
    want redis && bench_redis "$run"
done

med() { # med SYSTEM WORKLOAD METRIC
    local r
    for r in $(seq "$runs"); do
        local v="${R["$1,$2,$3,$r"]:-}"
        if [ -n "$v" ]; then echo "$v"; fi
    done | median
}

fmt() { # a whole number, or "-"
    case "$1" in '' | nan) echo "-" ;; *) printf "%.0f" "$1" ;; esac
}
ratio() {
    case "$1$2" in *nan* | "") echo "-" ;; *) awk -v a="$1" -v b="$2" 'BEGIN{ if (b>0) printf "%.1fx", a/b; else print "-" }' ;; esac
}

load="$(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "esd vs PostgreSQL 15 vs Redis 7 — medians of $runs runs, ${duration}s each, 200-byte events, durable"
echo "machine: $(nproc) cores, $(uname -r), load average at the end: $load"
printf '%-16s %12s %12s %12s %9s %9s\n' workload "esd" "PostgreSQL" "Redis" "esd/PG" "esd/Redis"
for w in append-1 append-16 append-64 append-100x16 replay-100k catchup-1m; do
    e="$(med esd $w eps)"; p="$(med pg $w eps)"; r="$(med redis $w eps)"
    printf '%-16s %12s %12s %12s %9s %9s\n' "$w ev/s" "$(fmt "$e")" "$(fmt "$p")" "$(fmt "$r")" \
        "$(ratio "$e" "$p")" "$(ratio "$e" "$r")"
done
for w in append-1 append-16 append-64; do
    printf '%-16s %12s %12s %12s\n' "$w p50 us" "$(fmt "$(med esd $w p50)")" "$(fmt "$(med pg $w p50)")" "$(fmt "$(med redis $w p50)")"
    printf '%-16s %12s %12s %12s\n' "$w p99 us" "$(fmt "$(med esd $w p99)")" "$(fmt "$(med pg $w p99)")" "$(fmt "$(med redis $w p99)")"
done
if want esd; then
    for m in "${methods[@]:1}"; do
        echo "esd --sync-method $m (side by side; ${methods[0]}/$m in brackets):"
        for w in append-1 append-16 append-64 append-100x16 replay-100k; do
            a="$(med esd $w eps)"; b="$(med "esd-$m" $w eps)"
            printf '  %-16s %12s   [%s]\n' "$w ev/s" "$(fmt "$b")" "$(ratio "$a" "$b")"
        done
        for w in append-1 append-16 append-64; do
            printf '  %-16s %12s / %s\n' "$w p50/p99 us" "$(fmt "$(med "esd-$m" $w p50)")" "$(fmt "$(med "esd-$m" $w p99)")"
        done
    done
    echo "esd mean commit batch (events per LMDB commit): 1 conn $(med esd append-1 batch), 16 conns $(med esd append-16 batch), 64 conns $(med esd append-64 batch)"
fi
