#!/usr/bin/env bash
# Central DP (DP-FedAvg, adaptive clipping): test accuracy against epsilon at
# delta = 1e-5. MNIST 2NN, K=1000 virtual clients (60 examples each, IID),
# devices Poisson-sampled at q = 0.1 (about 100 a round), E=1, B=10, client
# lr 0.1, clipping norm starting at 0.5 and adapted toward the median norm.
# Noise multipliers z in NOISES ("0" = no privacy, the baseline).
#
#   bash experiments/dp_sweep.sh OUT_DIR [ROUNDS]
#
# Prints a markdown table: z, final accuracy, epsilon, accuracy and epsilon
# after a quarter and half of the rounds.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:?usage: dp_sweep.sh OUT_DIR [ROUNDS]}"
ROUNDS="${2:-100}"
NOISES="${NOISES:-0 0.5 1.0 2.0}"
SIM="$ROOT/build/bin/fl-sim"
mkdir -p "$OUT"
echo "| z | accuracy after $ROUNDS rounds | epsilon (delta 1e-5) | at round $((ROUNDS / 4)): acc / eps | at round $((ROUNDS / 2)): acc / eps |"
echo "|---|---|---|---|---|"
for z in $NOISES; do
  dir="$OUT/z$z"
  mkdir -p "$dir"
  cat > "$dir.toml" <<TOML
seed = 1
rounds = $ROUNDS
targets = [0.90, 0.95]
data = "$ROOT/data/mnist"
partition = "iid"
model = "mnist_2nn"
clients = 1000
fraction = 0.1
deadline = 600
strategy = "fedavg"
dp-noise-multiplier = $z
dp-clip = 0.5
dp-adaptive-clip = true
dp-delta = 1e-5
epochs = 1
batch = 10
lr = 0.1
out = "$dir"
secure = false
TOML
  "$SIM" --config "$dir.toml" --quiet > "$dir.log" 2>&1 || { echo "run z=$z failed (see $dir.log)"; exit 1; }
  awk -F, -v z="$z" -v r="$ROUNDS" '
    NR > 1 { acc[$1] = $3; eps[$1] = (NF >= 10 ? $10 : "-") }
    END {
      q = int(r / 4); h = int(r / 2)
      printf "| %s | %.2f%% | %s | %.2f%% / %s | %.2f%% / %s |\n", z, 100 * acc[r], eps[r], 100 * acc[q], eps[q], 100 * acc[h], eps[h]
    }' "$dir/rounds.csv"
done
