#!/usr/bin/env bash
# Compression sweep: sparsity {0, 0.5, 0.9, 0.95} x uplink bits {32, 8, 4, 2} on the
# FedAvg CNN (K=100, C=0.1, IID), a fixed number of rounds each. Prints a markdown
# table of final test accuracy, encoded bytes per update and total uplink MB.
#   bash experiments/sweep_compression.sh [ROUNDS] [EPOCHS] [OUT_DIR]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROUNDS="${1:-5}"
EPOCHS="${2:-1}"
OUT="${3:-$ROOT/runs/sweep}"
SIM="$ROOT/build/bin/fl-sim"
CONFIG="$ROOT/experiments/configs/fedavg_cnn_iid.toml"
mkdir -p "$OUT"
json() { sed -n "s/.*\"$2\": \([^,]*\),*$/\1/p" "$1" | head -1; }
echo "| sparsity | bits | final test acc | delta bytes / update | uplink MB total |"
echo "|---|---|---|---|---|"
for s in 0 0.5 0.9 0.95; do
  for b in 32 8 4 2; do
    dir="$OUT/s${s}_b${b}"
    "$SIM" --config "$CONFIG" --rounds "$ROUNDS" --epochs "$EPOCHS" --sparsity "$s" \
      --uplink-bits "$b" --out "$dir" --quiet > "$dir.log" 2>&1 || { echo "run $dir failed"; exit 1; }
    acc=$(json "$dir/summary.json" final_accuracy)
    per=$(json "$dir/summary.json" delta_bytes_per_update)
    up=$(json "$dir/summary.json" upload_bytes)
    awk -v s="$s" -v b="$b" -v a="$acc" -v p="$per" -v u="$up" \
      'BEGIN { printf "| %s | %s | %.2f%% | %.0f | %.1f |\n", s, b, 100 * a, p, u / 1e6 }'
  done
done
