#!/usr/bin/env bash
# One command from a fresh Debian 12 clone to a passing test suite:
# installs packages and MNIST (scripts/setup.sh), builds, runs every ctest suite.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build}"
cd "$ROOT"

bash scripts/setup.sh
echo "[test] building in $BUILD_DIR"
BUILD_DIR="$BUILD_DIR" bash scripts/build.sh
echo "[test] running ctest"
# --no-tests=error: a run that finds no test is a failure, not a pass.
# Three at a time on two cores: most process tests spend part of their time
# waiting (deadlines, restarts, reconnects), so a third keeps both cores busy
# (experiments/BENCHMARKS.md, "The test suite's time"). CTEST_JOBS overrides it.
cd "$BUILD_DIR"
ctest --output-on-failure --no-tests=error -j"${CTEST_JOBS:-3}" --timeout 600
cd "$ROOT"

# Fuzz the wire and file decoders for a bounded time when clang (libFuzzer) is here.
FUZZ_SECONDS="${FUZZ_SECONDS:-60}"
if command -v clang++ >/dev/null && [ "$FUZZ_SECONDS" -gt 0 ]; then
  echo "[test] fuzzing the decoders for ${FUZZ_SECONDS} s (libFuzzer + AddressSanitizer)"
  FUZZ_DIR="$ROOT/build-fuzz"
  cmake -S "$ROOT" -B "$FUZZ_DIR" -DCMAKE_CXX_COMPILER=clang++ -DFL_BUILD_FUZZERS=ON \
    -DFL_BUILD_TESTS=OFF -DFL_BUILD_BENCHMARKS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$FUZZ_DIR" --target fl-fuzz-wire -j2 >/dev/null
  mkdir -p "$FUZZ_DIR/corpus"
  set +e
  "$FUZZ_DIR/bin/fl-fuzz-wire" -max_total_time="$FUZZ_SECONDS" -print_final_stats=1 \
    -artifact_prefix="$FUZZ_DIR/" "$FUZZ_DIR/corpus" > "$FUZZ_DIR/fuzz.log" 2>&1
  rc=$?
  set -e
  grep -E "^Done|stat::number_of_executed_units" "$FUZZ_DIR/fuzz.log" || true
  if [ "$rc" -ne 0 ]; then
    echo "[test] FAIL: the fuzzer found a failing input (see $FUZZ_DIR/fuzz.log, crash-* files)"
    tail -40 "$FUZZ_DIR/fuzz.log"
    exit 1
  fi
else
  echo "[test] clang++ not found: skipping the fuzzer (apt-get install clang to enable)"
fi
