#!/usr/bin/env bash
# The compressed-federation experiment as recorded in BENCHMARKS.md: the server
# prepares a 90%-sparse CNN once from a small proxy set (the first 6,000 MNIST
# training images: dense teacher 3 epochs, gradual magnitude pruning in 3 steps
# with 2 fine-tuning epochs each), then 100 clients federate it with 8-bit
# deltas (K=100, C=0.1, E=5, B=10, IID) for 25 rounds.
# Note: the proxy images are also part of the clients' partitions.
#   bash experiments/run_s90_q8.sh [OUT_DIR]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$ROOT/runs/s90_q8_proxy}"
mkdir -p "$OUT"
"$ROOT/build/bin/fl-compress" prune --model mnist_cnn --sparsity 0.9 --schedule gradual \
  --steps 3 --teacher-epochs 3 --finetune-epochs 2 --train-samples 6000 \
  --data "$ROOT/data/mnist" --out "$OUT/cnn90_proxy.flm"
"$ROOT/build/bin/fl-sim" --config "$ROOT/experiments/configs/fedavg_cnn_iid_s90_q8.toml" \
  --model-file "$OUT/cnn90_proxy.flm" --rounds 25 --data "$ROOT/data/mnist" --out "$OUT/sim"
