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
cd "$BUILD_DIR"
ctest --output-on-failure --no-tests=error -j2 --timeout 600
