#!/usr/bin/env bash
# format.sh — clang-format over the project's own C sources and headers.
#
#   tools/format.sh            format every file in place
#   tools/format.sh --check    change nothing; list the files that are not
#                              formatted and exit 1 if there are any
#   tools/format.sh [--check] FILE...   only these files
#
# Files: *.c and *.h under server/ client/ proto/ natsconn/ tools/ tests/, skipping
# build directories (build*/ anywhere) and generated protobuf-c code
# (*.pb-c.c, *.pb-c.h). The style is the committed .clang-format at the
# repository root. CLANG_FORMAT overrides the binary.
#
# Meson's run_targets 'format' and 'format-check' call this script from the
# build directory, so paths are resolved from the script's own location.
#
# Exit status: 0 formatted (or, with --check, nothing to change); 1 with
# --check when some file needs formatting; 2 on a usage error or when
# clang-format is missing or fails.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dirs=(server client proto natsconn tools tests)

usage() {
    sed -n '2,19s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

check=0
files=()
while [ $# -gt 0 ]; do
    case "$1" in
    --check) check=1 ;;
    -h | --help)
        usage
        exit 0
        ;;
    -*)
        echo "format.sh: unknown option: $1" >&2
        usage >&2
        exit 2
        ;;
    *) files+=("$1") ;;
    esac
    shift
done

find_clang_format() {
    if [ -n "${CLANG_FORMAT:-}" ]; then
        echo "$CLANG_FORMAT"
        return
    fi
    local c
    for c in clang-format clang-format-{19,18,17,16,15,14}; do
        if command -v "$c" >/dev/null 2>&1; then
            echo "$c"
            return
        fi
    done
    return 1
}

if ! cf="$(find_clang_format)"; then
    echo "format.sh: clang-format not found (apt-get install clang-format)" >&2
    exit 2
fi
if [ ! -f "$root/.clang-format" ]; then
    echo "format.sh: $root/.clang-format is missing" >&2
    exit 2
fi

cd "$root"
if [ ${#files[@]} -eq 0 ]; then
    existing=()
    for d in "${dirs[@]}"; do
        if [ -d "$d" ]; then
            existing+=("$d")
        fi
    done
    if [ ${#existing[@]} -gt 0 ]; then
        while IFS= read -r -d '' f; do
            files+=("${f#./}")
        done < <(find "${existing[@]}" \
            \( -type d \( -name 'build*' -o -name '.*' -o -name subprojects -o -name node_modules \) \
            -prune \) -o \
            \( -type f \( -name '*.c' -o -name '*.h' \) \
            ! -name '*.pb-c.c' ! -name '*.pb-c.h' -print0 \) | sort -z)
    fi
fi

if [ ${#files[@]} -eq 0 ]; then
    echo "format.sh: no C sources found" >&2
    exit 0
fi

if [ "$check" -eq 0 ]; then
    "$cf" --style=file -i -- "${files[@]}" || exit 2
    exit 0
fi

tmp="$(mktemp)"
trap 'rm -f "$tmp"' EXIT
bad=()
for f in "${files[@]}"; do
    if ! "$cf" --style=file -- "$f" >"$tmp"; then
        echo "format.sh: clang-format failed on $f" >&2
        exit 2
    fi
    if ! cmp -s -- "$tmp" "$f"; then
        bad+=("$f")
    fi
done

if [ ${#bad[@]} -gt 0 ]; then
    echo "Not formatted (run tools/format.sh, or ninja -C <builddir> format):"
    printf '  %s\n' "${bad[@]}"
    exit 1
fi
echo "format check: ${#files[@]} files formatted"
exit 0
