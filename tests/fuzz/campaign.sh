#!/usr/bin/env bash
# A fuzz campaign: every decoder's libFuzzer target (tests/fuzz/decoder_fuzz.cc)
# for SECONDS each, from its seed corpus, AddressSanitizer on, RSS capped at
# 2 GiB. Prints one line per target (executions, coverage, findings) and exits
# non-zero if any target found a failing input (kept as crash-* files).
#
#   bash tests/fuzz/campaign.sh [SECONDS_PER_TARGET] [OUT_DIR]
#   TARGETS="hello wal" bash tests/fuzz/campaign.sh 300   # only these
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SECONDS_EACH="${1:-60}"
OUT="${2:-$ROOT/build-fuzz/campaign}"
FUZZ_DIR="$ROOT/build-fuzz"
command -v clang++ >/dev/null || { echo "needs clang++ (apt-get install clang)" >&2; exit 2; }
cmake -S "$ROOT" -B "$FUZZ_DIR" -DCMAKE_CXX_COMPILER=clang++ -DFL_BUILD_FUZZERS=ON \
  -DFL_BUILD_TESTS=OFF -DFL_BUILD_BENCHMARKS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$FUZZ_DIR" --target fl-fuzzers -j2 >/dev/null
mkdir -p "$OUT"
"$FUZZ_DIR/bin/fl-fuzz-seeds" "$OUT/seeds"
failed=0
printf '%-11s %10s %12s %8s %8s %s\n' target seconds executions cov features result
for t in ${TARGETS:-envelope hello task update ready reply quant model_file checkpoint wal strategy_state}; do
  mkdir -p "$OUT/corpus/$t"
  set +e
  "$FUZZ_DIR/bin/fl-fuzz-$t" -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$OUT/$t-" "$OUT/corpus/$t" "$OUT/seeds/$t" \
    > "$OUT/$t.log" 2>&1
  rc=$?
  set -e
  execs=$(awk '/stat::number_of_executed_units/ {print $2}' "$OUT/$t.log")
  cov=$(grep -oE 'cov: [0-9]+' "$OUT/$t.log" | tail -1 | awk '{print $2}')
  ft=$(grep -oE 'ft: [0-9]+' "$OUT/$t.log" | tail -1 | awk '{print $2}')
  result=$([ "$rc" -eq 0 ] && echo "no findings" || echo "FAILED (see $OUT/$t.log)")
  [ "$rc" -eq 0 ] || failed=1
  printf '%-11s %10s %12s %8s %8s %s\n' "$t" "$SECONDS_EACH" "${execs:-?}" "${cov:-?}" "${ft:-?}" "$result"
done
exit $failed
