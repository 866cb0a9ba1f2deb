#!/usr/bin/env bash
# Formats every C++ source with the root .clang-format (Google style, 100 columns).
#   bash scripts/format.sh          # rewrite files in place
#   bash scripts/format.sh --check  # list files that need formatting; exit 1 if any
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v clang-format >/dev/null || { echo "clang-format not found (apt-get install clang-format)"; exit 2; }
mapfile -t files < <(git ls-files '*.cc' '*.h')
if [ "${1:-}" = "--check" ]; then
  bad=0
  for f in "${files[@]}"; do
    if ! clang-format --dry-run --Werror "$f" >/dev/null 2>&1; then echo "needs formatting: $f"; bad=1; fi
  done
  exit $bad
fi
clang-format -i "${files[@]}"
