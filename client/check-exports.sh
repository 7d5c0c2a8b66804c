#!/bin/sh
# Check that libesclient exports exactly the symbols of its version script,
# all named es_*. Usage: check-exports.sh NM LIBRARY MAPFILE
set -eu
nm=$1 lib=$2 map=$3
got=$("$nm" -D --defined-only "$lib" | awk '$2 ~ /^[TDBRV]$/ {print $3}' | sed 's/@.*//' | sort -u)
want=$(sed -n 's/^ *\(es_[a-z0-9_]*\);$/\1/p' "$map" | sort -u)
bad=$(printf '%s\n' "$got" | grep -v '^es_' || true)
if [ -n "$bad" ]; then
  echo "non-es_ symbols exported:"; echo "$bad"; exit 1
fi
if [ "$got" != "$want" ]; then
  echo "exported symbols differ from $map:"
  printf '%s\n' "$got" > /tmp/esclient-got.$$; printf '%s\n' "$want" > /tmp/esclient-want.$$
  diff /tmp/esclient-want.$$ /tmp/esclient-got.$$ || true
  rm -f /tmp/esclient-got.$$ /tmp/esclient-want.$$
  exit 1
fi
echo "ok: $(printf '%s\n' "$got" | wc -l) symbols, all es_*"
