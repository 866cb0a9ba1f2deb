#!/usr/bin/env bash
# Configures and builds fedge into build/ (binaries in build/bin/). Incremental.
#   BUILD_DIR=... BUILD_TYPE=Release JOBS=2 bash scripts/build.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build}"
BUILD_TYPE="${BUILD_TYPE:-Release}"
# Two jobs: LibTorch translation units take ~1 GiB and ~20 s each.
JOBS="${JOBS:-2}"
cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE="$BUILD_TYPE" >/dev/null
cmake --build "$BUILD_DIR" -j"$JOBS"
