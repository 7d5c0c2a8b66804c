#!/bin/sh
# test_install.sh BUILD_DIR PREFIX LIBDIR BINDIR MANDIR DATADIR UNITDIR
#
# `meson install` into a fresh DESTDIR, then check what landed there:
#  - the programs, libraries, headers and pkg-config files, the manual
#    pages, the systemd unit and the example configuration;
#  - a small program compiled against the installed headers and library
#    through the installed pkg-config file (PKG_CONFIG_PATH +
#    PKG_CONFIG_SYSROOT_DIR), run against the installed esd: it appends an
#    event and reads it back;
#  - the installed esd reads the installed example configuration
#    (--print-config), its manual page documents every option esd has, both
#    manual pages render without groff warnings, and the unit has every
#    @placeholder@ filled in (and passes systemd-analyze verify when that is
#    available).
# Exit 0 pass, 1 fail, 77 skip (no C compiler or pkg-config).
set -eu

build=$1 prefix=$2 libdir=$3 bindir=$4 mandir=$5 datadir=$6 unitdir=$7
case $libdir in /*) ;; *) libdir=$prefix/$libdir ;; esac
case $bindir in /*) ;; *) bindir=$prefix/$bindir ;; esac
case $mandir in /*) ;; *) mandir=$prefix/$mandir ;; esac
case $datadir in /*) ;; *) datadir=$prefix/$datadir ;; esac

cc=${CC:-cc}
command -v "$cc" >/dev/null 2>&1 || { echo "SKIP: no C compiler"; exit 77; }
command -v pkg-config >/dev/null 2>&1 || { echo "SKIP: no pkg-config"; exit 77; }

work=$(mktemp -d "${TMPDIR:-/tmp}/esd-install-XXXXXX")
esd_pid=
cleanup() {
    if [ -n "$esd_pid" ]; then kill -9 "$esd_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

dest=$work/dest
meson install -C "$build" --no-rebuild --quiet --destdir "$dest" >"$work/install.log" 2>&1 ||
    { cat "$work/install.log" >&2; fail "meson install"; }

# ---- what must be there ----
for f in \
    "$bindir/esd" "$bindir/esctl" "$bindir/esbench" "$bindir/es-account" "$bindir/es-account-view" \
    "$libdir/libesclient.so" "$libdir/pkgconfig/esclient.pc" \
    "$prefix/include/es/client.h" "$prefix/include/es/err.h" \
    "$mandir/man8/esd.8" "$mandir/man1/esctl.1" \
    "$unitdir/esd.service" \
    "$datadir/doc/esd/examples/esd.conf" "$datadir/doc/esd/examples/users"; do
    [ -e "$dest$f" ] || fail "not installed: $f"
done
for f in "$bindir/esd" "$bindir/esctl" "$bindir/esbench"; do
    [ -x "$dest$f" ] || fail "not executable: $f"
done
mode=$(stat -c %a "$dest$datadir/doc/esd/examples/users")
[ "$mode" = 600 ] || fail "example users file has mode $mode (esd wants 600)"
echo "installed files: ok"

export LD_LIBRARY_PATH="$dest$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# ---- the installed esd ----
"$dest$bindir/esd" --version | grep -q '^esd ' || fail "esd --version"
"$dest$bindir/esd" --config "$dest$datadir/doc/esd/examples/esd.conf" --print-config \
    >"$work/config.txt" 2>&1 || { cat "$work/config.txt" >&2; fail "example configuration refused"; }
grep -q '^data-dir = /var/lib/esd$' "$work/config.txt" || fail "example configuration not read"

# ---- manual pages ----
if command -v groff >/dev/null 2>&1; then
    for m in "$mandir/man8/esd.8" "$mandir/man1/esctl.1"; do
        groff -man -Tascii -ww -z "$dest$m" 2>"$work/groff.err" || fail "groff on $m"
        [ ! -s "$work/groff.err" ] || { cat "$work/groff.err" >&2; fail "groff warnings in $m"; }
    done
    groff -man -Tascii "$dest$mandir/man8/esd.8" 2>/dev/null | col -b >"$work/esd.8.txt"
    # every option of esd is documented
    sed -n 's/^\(# \)\{0,1\}\([a-z-]*\) = .*/\2/p' "$work/config.txt" | while read -r opt; do
        grep -q -- "--$opt" "$work/esd.8.txt" || fail "esd(8) does not document --$opt"
    done
    for opt in config print-config version help; do
        grep -q -- "--$opt" "$work/esd.8.txt" || fail "esd(8) does not document --$opt"
    done
    echo "manual pages: ok"
fi

# ---- the systemd unit ----
unit=$dest$unitdir/esd.service
! grep -q '@[a-z]*@' "$unit" || fail "unfilled placeholder in esd.service"
grep -q "^ExecStart=$bindir/esd " "$unit" || fail "ExecStart does not run $bindir/esd"
if command -v systemd-analyze >/dev/null 2>&1; then
    # verify wants the binary at its real path: point a copy at the DESTDIR
    sed "s|^ExecStart=$bindir/esd|ExecStart=$dest$bindir/esd|" "$unit" >"$work/esd.service"
    if systemd-analyze verify --man=no "$work/esd.service" >"$work/verify.log" 2>&1; then
        echo "systemd-analyze verify: ok"
    elif grep -qiE 'Failed to (connect|initialize|create)|not booted|System has not been booted' \
        "$work/verify.log"; then
        echo "systemd-analyze verify: not usable here (no systemd running)"
    else
        cat "$work/verify.log" >&2
        fail "systemd-analyze verify esd.service"
    fi
fi

# ---- a program built against the installed pkg-config file ----
cat >"$work/prog.c" <<'PROG'
#include <es/client.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    es_client_options o;
    es_client_options_init(&o);
    o.address = argv[1];
    o.client_name = "install-test";
    es_client *c = NULL;
    es_err rv = es_client_create(&o, &c);
    if (rv != ES_OK) {
        fprintf(stderr, "create: %s\n", es_strerror(rv));
        return 1;
    }
    es_event ev = {.type = "Installed", .data = "{\"ok\":true}", .data_len = 11};
    es_append_result res;
    rv = es_stream_append(c, "install-1", (es_expected){ES_EXPECT_NO_STREAM, 0}, &ev, 1, &res);
    if (rv != ES_OK) {
        fprintf(stderr, "append: %s (%s)\n", es_strerror(rv), es_client_errmsg(c));
        return 1;
    }
    es_read_iter *it = NULL;
    es_read_options ro;
    memset(&ro, 0, sizeof ro);
    const es_recorded_event *got = NULL;
    if (es_read_stream(c, "install-1", &ro, &it) != ES_OK || es_read_next(it, &got) != ES_OK ||
        got == NULL || strcmp(got->type, "Installed") != 0) {
        fprintf(stderr, "read back failed\n");
        return 1;
    }
    printf("appended at position %llu and read back\n", (unsigned long long)res.first_position);
    es_read_destroy(it);
    es_client_destroy(c);
    return argc == 2 ? 0 : 1;
}
PROG
export PKG_CONFIG_PATH="$dest$libdir/pkgconfig"
export PKG_CONFIG_SYSROOT_DIR="$dest"
flags=$(pkg-config --cflags --libs esclient) || fail "pkg-config esclient"
case $flags in *"$dest"*) ;; *) fail "pkg-config flags do not point into the DESTDIR: $flags" ;; esac
# shellcheck disable=SC2086
"$cc" -std=c11 -Wall -Werror -o "$work/prog" "$work/prog.c" $flags || fail "compiling against the installed library"
ldd "$work/prog" | grep -q "$dest$libdir/libesclient.so" || fail "prog does not load the installed libesclient"

"$dest$bindir/esd" --listen 127.0.0.1:0 --port-file "$work/port" --data-dir "$work/data" \
    --sync none >"$work/esd.log" 2>&1 &
esd_pid=$!
i=0
while [ ! -s "$work/port" ]; do
    i=$((i + 1))
    [ $i -lt 500 ] || { cat "$work/esd.log" >&2; fail "the installed esd did not start"; }
    kill -0 "$esd_pid" 2>/dev/null || { cat "$work/esd.log" >&2; fail "the installed esd exited"; }
    sleep 0.02
done
"$work/prog" "127.0.0.1:$(cat "$work/port")" || fail "the program against the installed esd"
"$dest$bindir/esctl" -s "127.0.0.1:$(cat "$work/port")" read install-1 >/dev/null ||
    fail "the installed esctl"
kill -TERM "$esd_pid"
wait "$esd_pid" || fail "esd exited with status $?"
esd_pid=
echo "PASS"
