#!/usr/bin/env bash
# The main job: set up, build, then run a federated simulation over real ZeroMQ
# sockets: the fl-server code and 10 virtual fl-clients training the FedAvg CNN on
# IID shards of MNIST (experiments/configs/quick.toml). Prints progress per round
# and a table at the end; results land in runs/quick/.
# Extra arguments go to fl-sim (see build/bin/fl-sim --help).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
echo "[demo] building"
bash scripts/build.sh
echo "[demo] running experiments/configs/quick.toml"
exec build/bin/fl-sim --config experiments/configs/quick.toml "$@"
