#!/usr/bin/env bash
# check-includes.sh — the include graph of a source folder must have no
# circle, counting modules rather than files.
#
#   tools/check-includes.sh DIR
#
# A module is a file pair DIR/**/NAME.c + NAME.h (or a header alone).
# Module A depends on module B when A.c or A.h includes "B.h" and B.h is
# under DIR (an include is resolved against the including file's folder,
# then DIR, then any folder under DIR holding a file of that name). So
# "handler.c includes metrics.h, and metrics.c includes handler.h" is a
# circle, even though the compiler accepts it. System and other folders'
# headers (<...>, proto/, natsconn/) are not part of the graph.
#
# Prints the modules and dependencies it found; exit status 0 when there
# is no circle, 1 when there is one (the modules on it are printed), 2 on
# a usage error.
set -euo pipefail

if [ $# -ne 1 ] || [ ! -d "$1" ]; then
    sed -n '2,17s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
    exit 2
fi
dir="${1%/}"

declare -A module_of # header path under DIR -> module
mapfile -t files < <(cd "$dir" && find . -path './build*' -prune -o -type f -name '*.[ch]' -print |
    sed 's|^\./||' | LC_ALL=C sort)
for f in "${files[@]}"; do
    case "$f" in
    *.h) module_of["$f"]="${f%.h}" ;;
    esac
done

resolve() { # including file, included name -> header path under DIR, or nothing
    local from_dir="." inc="$2" p
    case "$1" in
    */*) from_dir="${1%/*}" ;;
    esac
    for p in "$from_dir/$inc" "$inc"; do
        p="${p#./}"
        if [ -n "${module_of[$p]+x}" ]; then
            echo "$p"
            return
        fi
    done
    local found=()
    for p in "${!module_of[@]}"; do
        case "/$p" in
        */"$inc") found+=("$p") ;;
        esac
    done
    if [ ${#found[@]} -eq 1 ]; then
        echo "${found[0]}"
    fi
}

edges=()
for f in "${files[@]}"; do
    from="${f%.[ch]}"
    edges+=("$from $from")
    while IFS= read -r inc; do
        to="$(resolve "$f" "$inc")"
        if [ -n "$to" ]; then
            edges+=("$from ${module_of[$to]}")
        fi
    done < <(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$dir/$f")
done

modules=$(printf '%s\n' "${files[@]}" | sed 's/\.[ch]$//' | LC_ALL=C sort -u | wc -l)
deps=$(printf '%s\n' "${edges[@]}" | awk '$1 != $2' | LC_ALL=C sort -u | wc -l)
if ! err=$(printf '%s\n' "${edges[@]}" | tsort 2>&1 >/dev/null) || [ -n "$err" ]; then
    echo "check-includes: $dir has include circles (each line one, a module depending on the next):" >&2
    printf '%s\n' "$err" | awk '
        /input contains a loop/ { if (loop != "") print "  " loop; loop = ""; next }
        { sub(/^tsort: /, ""); loop = loop == "" ? $0 : loop " -> " $0 }
        END { if (loop != "") print "  " loop }' >&2
    echo "(a module is NAME.c + NAME.h; see the header of $0)" >&2
    exit 1
fi
echo "ok: $dir: $modules modules, $deps dependencies between them, no circle"
