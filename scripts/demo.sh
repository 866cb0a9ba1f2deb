#!/usr/bin/env bash
# The main job: set up, build, then train the FedAvg CNN on one client's shard of
# MNIST (client 0 of a 10-way IID split, 6,000 images) and print its test accuracy.
# Extra arguments go to fl-local (see build/bin/fl-local --help).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
echo "[demo] building"
bash scripts/build.sh
echo "[demo] training mnist_cnn on client 0 of 10 (IID), 2 epochs, B=10"
exec build/bin/fl-local --data data/mnist --model mnist_cnn --partition iid --clients 10 \
  --client 0 --epochs 2 --batch 10 --lr 0.05 --seed 1 "$@"
