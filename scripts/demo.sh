#!/usr/bin/env bash
# The main job: set up, build, then run a federated simulation over real ZeroMQ
# sockets: the fl-server code and 10 virtual fl-clients training the FedAvg CNN on
# IID shards of MNIST (experiments/configs/quick.toml). Prints progress per round
# and a table at the end; results land in runs/quick/, and the accuracy curves
# (against the round and against the uplink bytes) in runs/quick/accuracy.png.
# Extra arguments go to fl-sim (see build/bin/fl-sim --help).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
echo "[demo] building"
bash scripts/build.sh
echo "[demo] running experiments/configs/quick.toml"
build/bin/fl-sim --config experiments/configs/quick.toml "$@"
# (--out in the extra arguments moves the run: plot it from there.)
OUT=runs/quick
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  if [ "${args[$i]}" = "--out" ] && [ $((i + 1)) -lt ${#args[@]} ]; then OUT="${args[$((i + 1))]}"; fi
done
build/bin/fl-plot "$OUT" --title "experiments/configs/quick.toml" --out "$OUT/accuracy.png"
