#!/bin/sh
# Integration test of esctl against a real esd.
# Needs ESD_BIN and ESCTL_BIN (set by tests/esctl/meson.build).
# Each case runs one esctl command, captures stdout, stderr and the exit
# status, and checks them; failures are listed with command and output.
set -u

: "${ESD_BIN:?ESD_BIN not set}"
: "${ESCTL_BIN:?ESCTL_BIN not set}"

T=$(mktemp -d "${TMPDIR:-/tmp}/esctl-test.XXXXXX") || exit 1
ESD_PID=
ESD2_PID=
TAIL_PID=
FAILS=0
CASES=0
FAILED_NAMES=

stop_pid() { # PID: SIGTERM and wait for it
	[ -n "$1" ] || return 0
	kill -TERM "$1" 2>/dev/null
	wait "$1" 2>/dev/null
}
cleanup() {
	[ -n "$TAIL_PID" ] && kill -KILL "$TAIL_PID" 2>/dev/null && wait "$TAIL_PID" 2>/dev/null
	stop_pid "$ESD2_PID"
	stop_pid "$ESD_PID"
	rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

start_esd() { # DATADIR PORTFILE LOG [ESD ARGS] -> sets STARTED_PID, STARTED_PORT
	SE_DIR=$1; SE_PF=$2; SE_LOG=$3; shift 3
	rm -f "$SE_PF"
	"$ESD_BIN" --listen 127.0.0.1:0 --port-file "$SE_PF" --data-dir "$SE_DIR" \
		--sync none "$@" >"$SE_LOG" 2>&1 &
	STARTED_PID=$!
	i=0
	while [ ! -s "$SE_PF" ]; do
		i=$((i + 1))
		if [ $i -gt 200 ] || ! kill -0 "$STARTED_PID" 2>/dev/null; then
			echo "esd did not start (data dir $SE_DIR):"; cat "$SE_LOG"
			return 1
		fi
		sleep 0.05
	done
	STARTED_PORT=$(cat "$SE_PF")
}

# run ARGS...: runs esctl, sets RC, OUT (stdout file), ERR (stderr file)
# and CMD (the command line, for reports).
OUT="$T/out"; ERR="$T/err"
run() {
	CMD="esctl $*"
	"$ESCTL_BIN" "$@" >"$OUT" 2>"$ERR" </dev/null
	RC=$?
}
# run_in INPUTFILE ARGS...: same, with stdin from INPUTFILE.
run_in() {
	in=$1; shift
	CMD="esctl $* < $in"
	"$ESCTL_BIN" "$@" >"$OUT" 2>"$ERR" <"$in"
	RC=$?
}

# Checks on the last run. Each records a reason in WHY on failure.
WHY=
want_rc() { [ "$RC" -eq "$1" ] || WHY="$WHY
    exit status $RC, expected $1"; }
out_has() { grep -qF -- "$1" "$OUT" || WHY="$WHY
    stdout lacks: $1"; }
out_lacks() { ! grep -qF -- "$1" "$OUT" || WHY="$WHY
    stdout has: $1"; }
err_has() { grep -qF -- "$1" "$ERR" || WHY="$WHY
    stderr lacks: $1"; }
out_lines() { n=$(wc -l <"$OUT"); [ "$n" -eq "$1" ] || WHY="$WHY
    stdout has $n lines, expected $1"; }
# every stdout line is a JSON object (starts with '{', ends with '}')
out_json() {
	[ -s "$OUT" ] || { WHY="$WHY
    stdout empty, expected JSON"; return; }
	if grep -qv '^{.*}$' "$OUT"; then WHY="$WHY
    stdout line is not a JSON object"; fi
}
err_json() {
	[ -s "$ERR" ] || { WHY="$WHY
    stderr empty, expected JSON"; return; }
	if grep -qv '^{.*}$' "$ERR"; then WHY="$WHY
    stderr line is not a JSON object"; fi
}
# case NAME: ends the previous checks of a case and reports it
done_case() {
	CASES=$((CASES + 1))
	if [ -z "$WHY" ]; then
		echo "ok   $1"
	else
		FAILS=$((FAILS + 1))
		FAILED_NAMES="$FAILED_NAMES $1"
		echo "FAIL $1"
		echo "    command: $CMD$WHY"
		echo "    --- stdout:"; sed 's/^/    | /' "$OUT"
		echo "    --- stderr:"; sed 's/^/    | /' "$ERR"
	fi
	WHY=
}

# ---------------------------------------------------------------- esd
D="$T/data"
# A plain store: the damage case below finds an event's payload in
# data.mdb by its bytes (an encrypted store never writes them in plain).
start_esd "$D" "$T/port" "$T/esd.log" --no-encryption || exit 1
ESD_PID=$STARTED_PID
PORT=$STARTED_PORT
SRV="127.0.0.1:$PORT"
S="-s $SRV"
echo "# esd pid $ESD_PID on $SRV, data $D"

# ---------------------------------------------------------------- help / usage
run --help
want_rc 0; out_has "usage: esctl"; out_has "db backup DIR DEST"
done_case "help: --help exit 0"

for c in ping stats append read read-all streams info tail db; do
	run help $c
	want_rc 0; out_has "usage: esctl $c"
	done_case "help: help $c exit 0"
done

run $S read --help
want_rc 0; out_has "usage: esctl read STREAM"
done_case "help: read --help exit 0"

run $S frob
want_rc 2; err_has 'unknown command "frob"'
done_case "usage: unknown command exit 2"

run
want_rc 2
done_case "usage: no command exit 2"

run $S read
want_rc 2; err_has "missing argument"
done_case "usage: read without STREAM exit 2"

run $S append only-stream
want_rc 2
done_case "usage: append missing TYPE/DATA exit 2"

run $S info
want_rc 2
done_case "usage: info without STREAM exit 2"

run $S read x --bogus
want_rc 2; err_has "--bogus"
done_case "usage: bad option exit 2"

run $S read x --limit
want_rc 2
done_case "usage: option missing value exit 2"

run $S append x T '{}' --expected bogus
want_rc 2; err_has "bad value for --expected"
done_case "usage: bad --expected value exit 2"

run $S append x T '{}' --expected -5
want_rc 2
done_case "usage: negative --expected exit 2"

run $S read x --from notanumber
want_rc 2
done_case "usage: non-numeric --from exit 2"

run $S db
want_rc 2
done_case "usage: db without subcommand exit 2"

run db frob "$D"
want_rc 2
done_case "usage: unknown db subcommand exit 2"

run db backup "$D"
want_rc 2
done_case "usage: db backup without DEST exit 2"

# ---------------------------------------------------------------- connect
run -s 127.0.0.1:1 ping
want_rc 3; err_has "cannot connect"
done_case "connect: -s 127.0.0.1:1 ping exit 3"

run -s 127.0.0.1:1 read x
want_rc 3
done_case "connect: -s 127.0.0.1:1 read exit 3"

run -s 127.0.0.1:1 --json ping
want_rc 3; err_json
done_case "connect: --json error on stderr is JSON, exit 3"

CMD="ES_SERVER=127.0.0.1:1 esctl ping"
ES_SERVER=127.0.0.1:1 "$ESCTL_BIN" ping >"$OUT" 2>"$ERR" </dev/null; RC=$?
want_rc 3
done_case "connect: ES_SERVER=127.0.0.1:1 exit 3"

# ---------------------------------------------------------------- ping/stats
run $S ping
want_rc 0; out_has "server_version"; out_has "store_id"; out_has "$SRV"
done_case "ping: human"

run $S --json ping
want_rc 0; out_json; out_lines 1; out_has "\"server\":\"$SRV\""
out_has '"protocol_version":1'; out_has '"sync_mode":"none"'
done_case "ping: --json"

run ping $S --json
want_rc 0; out_json
done_case "ping: global options after the command"

CMD="ES_SERVER=$SRV esctl --json ping"
ES_SERVER=$SRV "$ESCTL_BIN" --json ping >"$OUT" 2>"$ERR" </dev/null; RC=$?
want_rc 0; out_json; out_has "\"server\":\"$SRV\""
done_case "ping: ES_SERVER honoured"

CMD="ES_SERVER=127.0.0.1:1 esctl -s $SRV ping"
ES_SERVER=127.0.0.1:1 "$ESCTL_BIN" -s "$SRV" ping >"$OUT" 2>"$ERR" </dev/null; RC=$?
want_rc 0
done_case "ping: -s overrides ES_SERVER"

run $S stats
want_rc 0; out_has "head_position"; out_has "event_count"; out_has "sync_mode"
done_case "stats: human"

run $S --json stats
want_rc 0; out_json; out_lines 1; out_has '"head_position":0'; out_has '"event_count":0'
done_case "stats: --json on an empty store"

# ---------------------------------------------------------------- append
run $S append acct-1 Opened '{"owner":"ann"}' --expected no-stream
want_rc 0; out_has "appended to acct-1: revision 0, position 1"
done_case "append: --expected no-stream (human)"

run $S --json append acct-1 Deposited '{"amount":10}' --expected 0 --metadata '{"by":"test"}'
want_rc 0; out_json; out_has '"stream":"acct-1"'; out_has '"revision":1'
out_has '"position":2'; out_has '"duplicate":false'
done_case "append: --expected 0 --metadata (--json)"

run $S append acct-1 Deposited '{"amount":5}' --expected 0
want_rc 1; err_has "conflict on acct-1"; err_has "expected revision 0"
err_has "actual revision 1"
done_case "append: conflict --expected 0 exit 1 with both revisions"

run $S --json append acct-1 Deposited '{"amount":5}' --expected 0
want_rc 1; err_json; err_has '"expected_revision":0'; err_has '"actual_revision":1'
done_case "append: conflict --json error object"

run $S append acct-1 Deposited '{"amount":5}' --expected no-stream
want_rc 1; err_has "conflict on acct-1"
done_case "append: --expected no-stream on existing stream exit 1"

run $S append acct-new Deposited '{"amount":5}' --expected exists
want_rc 1; err_has "acct-new"
done_case "append: --expected exists on missing stream exit 1"

run $S append acct-1 Deposited '{"amount":7}' --expected exists
want_rc 0; out_has "revision 2, position 3"
done_case "append: --expected exists"

run $S append acct-1 Deposited '{"amount":8}' --expected any
want_rc 0; out_has "revision 3, position 4"
done_case "append: --expected any"

run $S append acct-1 Deposited '{"amount":9}' --expected 3
want_rc 0; out_has "revision 4, position 5"
done_case "append: --expected N"

UUID=6f1c2e3d-4b5a-4c6d-8e7f-0123456789ab
run $S --json append order-1 Placed '{"sku":"ESCTL_UNIQUE_PAYLOAD_7f3a9"}' --id $UUID
want_rc 0; out_json; out_has "\"id\":\"$UUID\""; out_has '"duplicate":false'
out_has '"revision":0'
done_case "append: --id UUID"

run $S --json append order-1 Placed '{"sku":"ESCTL_UNIQUE_PAYLOAD_7f3a9"}' --id $UUID
want_rc 0; out_json; out_has "\"id\":\"$UUID\""; out_has '"duplicate":true'
done_case "append: repeated --id is idempotent (duplicate)"

run $S append order-1 Placed '{}' --id not-a-uuid
want_rc 2
done_case "append: bad --id exit 2"

printf '{"from":"file"}' >"$T/event.json"
run $S --json append file-1 FromFile "@$T/event.json"
want_rc 0; out_json; out_has '"stream":"file-1"'
done_case "append: DATA @FILE"

run $S append file-1 FromFile "@$T/does-not-exist.json"
[ "$RC" -ne 0 ] || WHY="$WHY
    exit status 0 for a missing @FILE"
done_case "append: DATA @missing-file fails"

printf '{"from":"stdin"}' >"$T/stdin.json"
run_in "$T/stdin.json" $S --json append stdin-1 FromStdin -
want_rc 0; out_json; out_has '"stream":"stdin-1"'
done_case "append: DATA - (stdin)"

printf 'not json \001\002' >"$T/bin.dat"
run $S append bin-1 Blob "@$T/bin.dat"
want_rc 0; out_has "appended to bin-1: revision 0"
done_case "append: binary @FILE"

# ---------------------------------------------------------------- read
run $S read acct-1
want_rc 0; out_has "REVISION"; out_has "POSITION"; out_has "RECORDED AT"
out_has "TYPE"; out_has "DATA"; out_has '{"owner":"ann"}'; out_has "Opened"
out_lines 6
done_case "read: human columns and rows"

run $S --json read acct-1
want_rc 0; out_json; out_lines 5; out_has '"stream":"acct-1"'
out_has '"type":"Opened"'; out_has '"data":{"owner":"ann"}'
out_has '"metadata":{"by":"test"}'; out_has '"content_type":"application/json"'
out_has '"recorded_at":"'
done_case "read: --json every event"

run $S --json read acct-1 --from 2 --limit 2
want_rc 0; out_json; out_lines 2; out_has '"revision":2'; out_has '"revision":3'
out_lacks '"revision":1,'; out_lacks '"revision":4'
done_case "read: --from 2 --limit 2"

run $S --json read acct-1 --backward --limit 1
want_rc 0; out_json; out_lines 1; out_has '"revision":4'
done_case "read: --backward --limit 1"

run $S --json read acct-1 --backward --from 1
want_rc 0; out_json; out_lines 2
[ "$(head -n 1 "$OUT" | grep -c '"revision":1,')" -eq 1 ] || WHY="$WHY
    first line is not revision 1"
done_case "read: --backward --from 1"

run $S --json read stdin-1
want_rc 0; out_json; out_has '"data":{"from":"stdin"}'
done_case "read: event appended from stdin"

run $S --json read file-1
want_rc 0; out_json; out_has '"data":{"from":"file"}'
done_case "read: event appended from @FILE"

run $S --json read bin-1
want_rc 0; out_json; out_has '"data_encoding":"base64"'
done_case "read: binary data as base64 (--json)"

run $S read bin-1
want_rc 0; out_has "base64:"
done_case "read: binary data as base64: (human)"

run $S read no-such-stream
# A missing stream: either an empty listing (0) or not found (1); never a
# usage error or a connection error.
case $RC in 0|1) ;; *) WHY="$WHY
    exit status $RC, expected 0 or 1";; esac
done_case "read: missing stream exit 0/1 (rc=$RC)"

# ---------------------------------------------------------------- read-all
# Log: 1-5 acct-1, 6 order-1, 7 file-1, 8 stdin-1, 9 bin-1
run $S read-all
want_rc 0; out_has "POSITION"; out_has "STREAM"; out_has "REVISION"
out_has "RECORDED AT"; out_has "TYPE"; out_has "DATA"; out_lines 10
done_case "read-all: human columns, all events"

run $S --json read-all
want_rc 0; out_json; out_lines 9
done_case "read-all: --json all events"

run $S --json read-all --after 5 --limit 2
want_rc 0; out_json; out_lines 2; out_has '"position":6'; out_has '"position":7'
done_case "read-all: --after 5 --limit 2"

run $S --json read-all --category acct
want_rc 0; out_json; out_lines 5; out_lacks '"stream":"order-1"'
done_case "read-all: --category acct"

run $S --json read-all --type Placed
want_rc 0; out_json; out_lines 1; out_has '"stream":"order-1"'
done_case "read-all: --type Placed"

run $S --json read-all --prefix std
want_rc 0; out_json; out_lines 1; out_has '"stream":"stdin-1"'
done_case "read-all: --prefix std"

run $S --json read-all --backward --limit 1
want_rc 0; out_json; out_lines 1; out_has '"position":9'
done_case "read-all: --backward --limit 1"

# ---------------------------------------------------------------- streams
run $S streams
want_rc 0; out_has "STREAM"; out_has "EVENTS"; out_has "LAST REV"
out_has "FIRST POS"; out_has "LAST POS"; out_has "UPDATED"; out_lines 6
done_case "streams: human columns"

run $S --json streams
want_rc 0; out_json; out_lines 5; out_has '"stream":"acct-1","last_revision":4,"event_count":5'
done_case "streams: --json"

run $S --json streams --prefix acct
want_rc 0; out_json; out_lines 1; out_has '"stream":"acct-1"'
done_case "streams: --prefix acct"

run $S --json streams --limit 2
want_rc 0; out_json; out_lines 2
done_case "streams: --limit 2"

run $S --json streams --after order-1
want_rc 0; out_json; out_lines 1; out_has '"stream":"stdin-1"'
done_case "streams: --after order-1"

# ---------------------------------------------------------------- info
run $S info acct-1
want_rc 0; out_has "stream"; out_has "acct-1"; out_has "last_revision"
out_has "event_count"; out_has "created_at"; out_has "updated_at"
done_case "info: human"

run $S --json info acct-1
want_rc 0; out_json; out_lines 1
out_has '"stream":"acct-1","last_revision":4,"event_count":5,"first_position":1,"last_position":5'
done_case "info: --json"

run $S info no-such-stream
want_rc 1; err_has "no such stream"
done_case "info: missing stream exit 1"

run $S --json info no-such-stream
want_rc 1; err_json; err_has '"error":"NOT_FOUND"'
done_case "info: missing stream --json error exit 1"

run $S --json stats
want_rc 0; out_json; out_has '"head_position":9'; out_has '"stream_count":5'
out_has '"event_count":9'
done_case "stats: counts after appends"

# ---------------------------------------------------------------- tail
TOUT="$T/tail.out"; TERR="$T/tail.err"
"$ESCTL_BIN" -s "$SRV" tail --all --from-start --json >"$TOUT" 2>"$TERR" </dev/null &
TAIL_PID=$!
CMD="esctl tail --all --from-start --json"
i=0
while [ "$(grep -c '^{' "$TOUT")" -lt 9 ] && [ $i -lt 200 ]; do
	i=$((i + 1)); sleep 0.05
done
[ "$(grep -c '^{' "$TOUT")" -ge 9 ] || WHY="$WHY
    tail did not print the 9 existing events"
"$ESCTL_BIN" -s "$SRV" append tail-1 Tailed '{"marker":"TAIL_MARK_42"}' >/dev/null 2>&1 || WHY="$WHY
    append for tail failed"
i=0
while ! grep -q 'TAIL_MARK_42' "$TOUT" && [ $i -lt 200 ]; do
	i=$((i + 1)); sleep 0.05
done
grep -q '^{.*"stream":"tail-1".*"marker":"TAIL_MARK_42".*}$' "$TOUT" || WHY="$WHY
    tail did not print the new event as a JSON line"
kill -INT "$TAIL_PID"
wait "$TAIL_PID"; RC=$?
TAIL_PID=
want_rc 0
cp "$TOUT" "$OUT"; cp "$TERR" "$ERR"
done_case "tail: --all --from-start --json, sees the append, SIGINT exit 0"

run -s 127.0.0.1:1 tail --all
want_rc 3
done_case "tail: cannot connect exit 3"

# ---------------------------------------------------------------- db
run db stat "$D"
want_rc 0; out_has "store_id"; out_has "format_version"; out_has "head_position"
out_has "event_count"; out_has "map_used"
done_case "db stat: human on live store"

run --json db stat "$D"
want_rc 0; out_json; out_has '"head_position":10'; out_has '"event_count":10'
out_has '"stream_count":6'; out_has '"pages_live":'; out_has '"pages_free":'
out_has '"pages_unreclaimed":0'; out_has '"events_unreclaimed":0'
done_case "db stat: --json on live store, pages by use (nothing deleted here)"

run db stat "$T/no-such-dir"
want_rc 1
done_case "db stat: missing dir exit 1"

run db check "$D"
want_rc 0; out_has "ok"; out_has "10 events"
done_case "db check: live store exit 0"

run --json db check "$D"
want_rc 0; out_json; out_has '"ok":true'; out_has '"crc_errors":0'
out_has '"events_checked":10'
done_case "db check: --json live store"

# Damaged copy: flip the bytes of the unique payload in data.mdb.
DMG="$T/damaged"
mkdir -p "$DMG" && cp "$D"/* "$DMG"/
CMD="(damage $DMG/data.mdb)"
OFFS=$(grep -obUa 'ESCTL_UNIQUE_PAYLOAD_7f3a9' "$DMG/data.mdb" | cut -d: -f1)
if [ -z "$OFFS" ]; then
	: >"$OUT"; : >"$ERR"
	WHY="$WHY
    payload string not found in data.mdb"
	done_case "db check: damaged copy exit 1"
else
	for o in $OFFS; do
		printf 'XXXXX' | dd of="$DMG/data.mdb" bs=1 seek=$((o + 6)) conv=notrunc 2>/dev/null
	done
	run db check "$DMG"
	want_rc 1; out_has "DEFECTS FOUND"; out_has "1 CRC errors"
	done_case "db check: damaged copy exit 1 (flipped at$(echo $OFFS | tr '\n' ' '))"
	run --json db check "$DMG"
	want_rc 1; out_json; out_has '"ok":false'; out_has '"crc_errors":1'
	out_has '"first_bad_position":6'
	done_case "db check: damaged copy --json ok:false"
fi

run db check "$T/no-such-dir"
want_rc 1
done_case "db check: missing dir exit 1"

# backup, then serve the backup with a second esd and read it back
BK="$T/backup"
run db backup "$D" "$BK"
want_rc 0
[ -f "$BK/data.mdb" ] || WHY="$WHY
    no $BK/data.mdb"
done_case "db backup: live store exit 0"

run db check "$BK"
want_rc 0; out_has "10 events"
done_case "db check: backup is clean"

mkdir -p "$T/nonempty" && echo x >"$T/nonempty/file"
run db backup "$D" "$T/nonempty"
want_rc 1
done_case "db backup: non-empty DEST exit 1"

if start_esd "$BK" "$T/port2" "$T/esd2.log"; then
	ESD2_PID=$STARTED_PID
	S2="-s 127.0.0.1:$STARTED_PORT"
	run $S2 --json read acct-1
	want_rc 0; out_json; out_lines 5; out_has '"data":{"owner":"ann"}'
	done_case "db backup: second esd on DEST reads acct-1"
	run $S2 --json read-all
	want_rc 0; out_json; out_lines 10; out_has 'TAIL_MARK_42'
	out_has "\"id\":\"$UUID\""
	done_case "db backup: second esd on DEST read-all"
	run $S2 --json info tail-1
	want_rc 0; out_has '"last_position":10'
	done_case "db backup: second esd info"
	stop_pid "$ESD2_PID"; ESD2_PID=
else
	: >"$OUT"; cp "$T/esd2.log" "$ERR"; CMD="esd --data-dir $BK"
	WHY="esd on the backup did not start"
	done_case "db backup: second esd on DEST"
fi

# ---------------------------------------------------------------- shutdown
kill -TERM "$ESD_PID"; wait "$ESD_PID"; RC=$?; ESD_PID=
CMD="kill -TERM esd"; : >"$OUT"; cp "$T/esd.log" "$ERR"
want_rc 0
done_case "esd: SIGTERM exit 0"

echo "# $CASES cases, $FAILS failed${FAILED_NAMES:+:$FAILED_NAMES}"
[ "$FAILS" -eq 0 ]
