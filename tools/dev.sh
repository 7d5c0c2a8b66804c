#!/usr/bin/env bash
# dev.sh — build, run and test esd on a Debian 12 machine.
#
#   tools/dev.sh run [ESD-ARGS...]
#       Install missing packages, configure and build ./build, then start
#       build/server/esd from the repository root (so its default data
#       directory, ./esd-data, lands there), passing ESD-ARGS through.
#       Exits 0 with a note when the server is not built yet.
#
#   tools/dev.sh test
#       Install missing packages (and tests/web's npm packages from their
#       lockfile); check formatting (tools/format.sh --check); build ./build
#       and run the unit, integration, reliability and nats suites, plus the
#       scale suite, the Python client (python-coverage) and the web
#       console's browser and load tests (web); build ./build-asan with AddressSanitizer +
#       UndefinedBehaviorSanitizer and run the unit, integration, reliability
#       and nats suites there; build ./build-tsan with
#       ThreadSanitizer and run the unit and integration suites; run every
#       libFuzzer target for FUZZ_SECONDS (default 60) in ./build-fuzz. Ends with exactly one line
#       "N passed, N failed" over both passes, and exits 1 if anything
#       failed. A failed configure, build or format check counts as one
#       failure; skipped tests count as neither. The long suite is not run
#       (meson test -C build --suite long).
#
#   tools/dev.sh fuzz [SECONDS]
#       Only the fuzz pass (also part of test): libFuzzer + ASan + UBSan
#       targets in ./build-fuzz, SECONDS each (default 60).
#
#   tools/dev.sh --help
#
# Packages are checked with dpkg-query and installed with apt-get (through
# sudo when not root); on a machine without dpkg this step is skipped.
set -euo pipefail

# Debian 12 packages for building, testing and running esd.
PACKAGES="build-essential meson ninja-build pkg-config liblmdb-dev lmdb-utils libprotobuf-c-dev
protobuf-c-compiler libevent-dev libcmocka-dev libjansson-dev libssl-dev libinih-dev clang libclang-rt-14-dev clang-format valgrind
nats-server libnats-dev python3-protobuf protobuf-compiler python3-coverage python3-setuptools python3-pip python3-wheel
chromium"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
suites_wanted=(unit integration reliability nats)
tests_excluded=()

usage() {
    # The comment block at the top, up to the first line that is not one.
    sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"
}

say() {
    printf '==> %s\n' "$*"
}

# ------------------------------------------------------------ packages --

install_deps() {
    if ! command -v dpkg-query >/dev/null 2>&1; then
        say "no dpkg-query: not a Debian system, skipping package installation"
        return 0
    fi
    local missing=() p
    for p in $PACKAGES; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$p")
        fi
    done
    # Node.js and npm (the web console's browser test) only when missing: a
    # machine may carry another build of Node.js (NodeSource's bundles npm,
    # and Debian's npm package conflicts with it).
    command -v node >/dev/null 2>&1 || missing+=(nodejs)
    command -v npm >/dev/null 2>&1 || missing+=(npm)
    if [ ${#missing[@]} -eq 0 ]; then
        return 0
    fi
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if ! command -v sudo >/dev/null 2>&1; then
            echo "dev.sh: missing packages (${missing[*]}) and not root; sudo not found" >&2
            return 1
        fi
        sudo=(sudo)
    fi
    say "installing: ${missing[*]}"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
}

# The web console's browser test drives chromium with puppeteer-core, pinned
# in tests/web/package-lock.json: `npm ci` installs exactly the lockfile's
# versions (from npm's cache when they are there), never a newer one, and
# downloads no browser (puppeteer-core has none).
npm_deps() {
    local dir="$root/tests/web"
    if [ -d "$dir/node_modules/puppeteer-core" ] &&
        [ "$dir/node_modules/.package-lock.json" -nt "$dir/package-lock.json" ]; then
        return 0
    fi
    if ! command -v npm >/dev/null 2>&1; then
        say "no npm: the web_browser test cannot run"
        return 1
    fi
    say "npm ci in tests/web (from package-lock.json)"
    if ! (cd "$dir" && npm ci --no-audit --no-fund --prefer-offline); then
        say "npm ci failed: the web_browser test cannot run"
        return 1
    fi
}

# --------------------------------------------------------------- build --

# configure DIR [MESON-OPTIONS...]: set up DIR, or apply the options to an
# existing one (ninja regenerates by itself when meson.build files change).
configure() {
    local dir="$1"
    shift
    if [ ! -f "$root/$dir/meson-private/coredata.dat" ]; then
        meson setup "$root/$dir" "$root" "$@"
    elif [ $# -gt 0 ]; then
        meson configure "$root/$dir" "$@" >/dev/null ||
            meson setup --wipe "$root/$dir" "$root" "$@"
    fi
}

# ---------------------------------------------------------------- test --

passed=0
failed=0
failures=()

note_failure() {
    failed=$((failed + 1))
    failures+=("$1")
    say "FAILED: $1"
}

# The suites among suites_wanted that DIR defines, one per line.
suites_in() {
    meson introspect --tests "$root/$1" | python3 -c '
import json, sys
names = {s.split(":")[-1] for t in json.load(sys.stdin) for s in t["suite"]}
print("\n".join(sorted(names)))'
}

# Parse meson test's summary from LOG: sets ok, bad (fail + timeout +
# unexpected pass), found (1 when a summary was there).
parse_summary() {
    local out
    out="$(awk '
        /^Ok:/              { ok = $2; found = 1 }
        /^Expected Fail:/   { xfail = $3 }
        /^Fail:/            { fail = $2 }
        /^Unexpected Pass:/ { xpass = $3 }
        /^Timeout:/         { timeout = $2 }
        END { printf "%d %d %d\n", ok + xfail, fail + timeout + xpass, found }
    ' "$1")"
    read -r ok bad found <<<"$out"
}

# run_pass NAME DIR ENV-ASSIGNMENTS -- MESON-OPTIONS... -- MESON-TEST-ARGS...
run_pass() {
    local name="$1" dir="$2"
    shift 2
    local envs=() opts=() targs=()
    while [ $# -gt 0 ] && [ "$1" != -- ]; do
        envs+=("$1")
        shift
    done
    shift
    while [ $# -gt 0 ] && [ "$1" != -- ]; do
        opts+=("$1")
        shift
    done
    [ $# -gt 0 ] && shift
    targs=("$@")

    say "[$name] configure $dir"
    if ! configure "$dir" "${opts[@]}"; then
        note_failure "$name: meson setup of $dir"
        return 0
    fi
    say "[$name] build $dir"
    if ! ninja -C "$root/$dir"; then
        note_failure "$name: build ($dir)"
        return 0
    fi

    local available s args=()
    if ! available="$(suites_in "$dir")"; then
        note_failure "$name: cannot list the tests of $dir"
        return 0
    fi
    for s in "${suites_wanted[@]}"; do
        if grep -qx -- "$s" <<<"$available"; then
            args+=(--suite "$s")
        fi
    done
    if [ ${#args[@]} -eq 0 ]; then
        say "[$name] no ${suites_wanted[*]} tests defined"
        return 0
    fi
    # tests_excluded (names): run the wanted suites' tests but these, by name.
    if [ ${#tests_excluded[@]} -gt 0 ]; then
        local names
        names="$(meson introspect --tests "$root/$dir" | EXCLUDE="${tests_excluded[*]}" \
            WANTED="${suites_wanted[*]}" python3 -c '
import json, os, sys
wanted = set(os.environ["WANTED"].split())
excluded = set(os.environ["EXCLUDE"].split())
for t in json.load(sys.stdin):
    suites = {s.split(":")[-1] for s in t["suite"]}
    if suites & wanted and t["name"] not in excluded:
        print(t["name"])')"
        args=()
        while read -r s; do
            [ -n "$s" ] && args+=("$s")
        done <<<"$names"
    fi

    say "[$name] meson test ${args[*]}"
    local log rc
    log="$(mktemp)"
    set +e
    env "${envs[@]}" meson test -C "$root/$dir" --no-rebuild --print-errorlogs "${args[@]}" \
        "${targs[@]}" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    set -e
    local ok bad found
    parse_summary "$log"
    rm -f "$log"
    passed=$((passed + ok))
    if [ "$bad" -gt 0 ]; then
        failed=$((failed + bad))
        failures+=("$name: $bad test(s)")
    elif [ "$rc" -ne 0 ] || [ "$found" -ne 1 ]; then
        note_failure "$name: meson test exited $rc without reporting a failed test"
    fi
}

# Fuzz pass: a clang build with libFuzzer + ASan + UBSan;
# every target runs FUZZ_SECONDS (default 60) from its seed corpus. A
# crash, sanitizer report or leak fails the target; its reproducer is kept
# in build-fuzz/artifacts/.
run_fuzz() {
    local secs="${FUZZ_SECONDS:-60}" dir="$root/build-fuzz"
    say "[fuzz] configure build-fuzz (clang, libFuzzer, ASan+UBSan)"
    if [ ! -f "$dir/meson-private/coredata.dat" ]; then
        if ! CC=clang CFLAGS=-fsanitize=fuzzer-no-link meson setup "$dir" "$root" -Dfuzz=true \
            -Db_sanitize=address,undefined -Db_lundef=false; then
            note_failure "fuzz: meson setup"
            return 0
        fi
    fi
    if ! ninja -C "$dir" tests/fuzz/fuzz_request tests/fuzz/fuzz_stream tests/fuzz/fuzz_record; then
        note_failure "fuzz: build"
        return 0
    fi
    mkdir -p "$dir/artifacts"
    local t corpus work
    for t in request stream record; do
        work="$(mktemp -d)"
        say "[fuzz] fuzz_$t for ${secs}s"
        if ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
            "$dir/tests/fuzz/fuzz_$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
            -artifact_prefix="$dir/artifacts/$t-" -print_final_stats=1 \
            "$work" "$root/tests/fuzz/corpus/$t" 2>"$dir/fuzz_$t.log"; then
            passed=$((passed + 1))
            grep -E '^stat::number_of_executed_units' "$dir/fuzz_$t.log" || true
        else
            tail -40 "$dir/fuzz_$t.log"
            note_failure "fuzz: fuzz_$t (see build-fuzz/fuzz_$t.log and build-fuzz/artifacts)"
        fi
        rm -rf "$work"
    done
}

cmd_test() {
    install_deps
    # The browser test fails, rather than skips, when its tools are missing.
    export ESD_REQUIRE_BROWSER=1
    if ! npm_deps; then
        note_failure "npm ci in tests/web"
    fi

    say "format check"
    if ! "$root/tools/format.sh" --check; then
        note_failure "format check"
    fi

    # The plain pass also runs the scale suite (its bounds are on RSS, which
    # the sanitizers' shadow memory blurs), the Python client under coverage
    # and the web console in a browser.
    local saved=("${suites_wanted[@]}")
    suites_wanted+=(scale python-coverage web)
    run_pass plain build -- -Dtests=true --
    suites_wanted=("${saved[@]}")

    # The sanitizer passes run the C suites; the lost-update test (64
    # clients x 1,000 increments, minutes of CPU) is shrunk there to 100
    # successes each — its figure comes from the plain pass.
    local asan="${ASAN_OPTIONS:+$ASAN_OPTIONS:}halt_on_error=1:detect_leaks=1"
    local ubsan="${UBSAN_OPTIONS:+$UBSAN_OPTIONS:}print_stacktrace=1:halt_on_error=1"
    # The 2-minute soak measures RSS, which ASan's quarantine blurs:
    # it runs in the plain pass only.
    tests_excluded=(soak)
    run_pass sanitizers build-asan "ASAN_OPTIONS=$asan" "UBSAN_OPTIONS=$ubsan" \
        ESD_LOST_UPDATE_SUCCESSES=100 -- \
        -Dtests=true -Db_sanitize=address,undefined -Db_lundef=false -- \
        --timeout-multiplier 3
    tests_excluded=()

    # ThreadSanitizer over the unit and integration suites (the writer
    # thread against the loop thread, the client's threads). Left out under
    # TSan: subs_stalled (RSS and latency figures that TSan's
    # shadow memory and 5-15x slowdown make meaningless) and the suites that
    # are single-threaded on both sides and take minutes under TSan (the
    # store's unit tests, the malformed-input catalogue, limits, the CLI
    # suites); they run in the plain and ASan passes.
    saved=("${suites_wanted[@]}")
    suites_wanted=(unit integration)
    tests_excluded=(subs_stalled store_open store_write store_limits store_read store_check malformed limits
        account-cli esctl)
    run_pass tsan build-tsan "TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1" \
        ESD_LOST_UPDATE_SUCCESSES=100 -- \
        -Dtests=true -Db_sanitize=thread -Db_lundef=false -- \
        --timeout-multiplier 4
    tests_excluded=()
    suites_wanted=("${saved[@]}")

    run_fuzz

    if [ ${#failures[@]} -gt 0 ]; then
        say "failures:"
        printf '    %s\n' "${failures[@]}"
    fi
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ]
}

# ----------------------------------------------------------------- run --

cmd_run() {
    install_deps
    configure build
    ninja -C "$root/build"
    local esd="$root/build/server/esd"
    if [ ! -x "$esd" ]; then
        echo "The server is not built yet (no build/server/esd); nothing to run."
        exit 0
    fi
    cd "$root"
    exec "$esd" "$@"
}

# ---------------------------------------------------------------- main --

case "${1:-}" in
run)
    shift
    cmd_run "$@"
    ;;
test)
    shift
    if [ $# -gt 0 ]; then
        echo "dev.sh: test takes no arguments" >&2
        exit 2
    fi
    cmd_test
    ;;
fuzz)
    shift
    FUZZ_SECONDS="${1:-${FUZZ_SECONDS:-60}}"
    install_deps
    run_fuzz
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ]
    ;;
-h | --help | help)
    usage
    ;;
*)
    usage >&2
    exit 2
    ;;
esac
