#!/usr/bin/env bash
# The code's shape, as the architecture (docs/architecture.md) holds it:
#   - functions over 80 lines in the libraries (common/, crypto/, transport/,
#     client/, server/) and in experiments/ (declarative flag tables apart);
#   - fields of the server's conductor (server/conductor.h), at most 30;
#   - lines of server/server.cc, at most 1,000;
#   - includes against the layering common <- crypto <- transport, client,
#     server <- relay <- experiments, in the libraries (a binary's main.cc
#     composes them and may include any).
# Prints what it counts; exits 1 when a limit is broken. Needs universal-ctags.
#   bash scripts/shape.sh [--max-long N]
# --max-long N: allow at most N functions over 80 lines (default 0), for a
# tree on its way there: the count may only go down.
set -uo pipefail
MAX_LONG=0
if [ "${1:-}" = "--max-long" ]; then MAX_LONG="$2"; fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
command -v ctags >/dev/null || { echo "shape.sh needs universal-ctags (apt-get install universal-ctags)" >&2; exit 2; }
MAX_FN=80
bad=0

# Functions (and lambdas ctags sees as functions) with their length in lines.
# Flag tables: a function whose body is mostly add_option/add_flag calls.
long=$(ctags -R --languages=C++ --c++-kinds=f --fields=+ne -o - common crypto transport client server experiments 2>/dev/null |
  awk -F'\t' -v max="$MAX_FN" '{
      line = ""; end = "";
      for (i = 4; i <= NF; i++) { if ($i ~ /^line:/) line = substr($i, 6); if ($i ~ /^end:/) end = substr($i, 5) }
      if (line != "" && end != "" && end - line + 1 > max) printf "%s:%s %s %d\n", $2, line, $1, end - line + 1
    }' | sort -u)
over=""
while read -r where name n; do
  [ -n "$where" ] || continue
  file=${where%%:*}; start=${where##*:}
  if [[ $file == experiments/* ]]; then
    body=$(sed -n "${start},$((start + n - 1))p" "$file")
    opts=$(grep -c 'add_option\|add_flag\|add_subcommand' <<<"$body")
    # A declarative flag table: most of its statements declare flags.
    if [ "$opts" -ge $((n / 8)) ]; then continue; fi
  fi
  over+="  $where $name: $n lines"$'\n'
done <<<"$long"
count=$(printf '%s' "$over" | grep -c . || true)
echo "functions over $MAX_FN lines: $count (at most $MAX_LONG)"
[ -n "$over" ] && printf '%s' "$over"
[ "$count" -le "$MAX_LONG" ] || bad=1

fields=$(awk '/^class Conductor final/ {in_class = 1} in_class && /^};/ {in_class = 0}
  in_class && /^  [A-Za-z_][A-Za-z0-9_:<>, *&]* [a-z_]+_(\{.*\})?;/ {n++} END {print n + 0}' server/conductor.h)
echo "conductor fields: $fields (at most 30)"
[ "$fields" -le 30 ] || bad=1

lines=$(wc -l <server/server.cc)
echo "server/server.cc: $lines lines (at most 1000)"
[ "$lines" -le 1000 ] || bad=1

# Layering: which folders each folder's code may include from.
layer_violations=""
check_layer() {  # folder allowed-pattern
  local hits
  hits=$(grep -rn '#include "\(common\|crypto\|transport\|client\|server\|relay\|experiments\)/' "$1" \
    --include=*.h --include=*.cc --exclude=main.cc | grep -v "#include \"\($2\)/" || true)
  [ -z "$hits" ] || layer_violations+="$hits"$'\n'
}
check_layer common 'common'
check_layer crypto 'common\|crypto'
check_layer transport 'common\|crypto\|transport'
check_layer client 'common\|crypto\|transport\|client'
check_layer server 'common\|crypto\|transport\|server'
check_layer relay 'common\|crypto\|transport\|client\|server\|relay'
n_layer=$(printf '%s' "$layer_violations" | grep -c . || true)
echo "includes against the layering: $n_layer"
[ -n "$layer_violations" ] && printf '%s' "$layer_violations"
[ "$n_layer" -eq 0 ] || bad=1

exit $bad
