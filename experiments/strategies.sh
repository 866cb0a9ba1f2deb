#!/usr/bin/env bash
# Every strategy on the MNIST CNN: K=100, C=0.1, E=5, B=10, 90% sparse (pruned at
# initialisation), 8-bit uplink; IID and pathological shards (2 per client).
# Rounds to 97/98/99% test accuracy, up to ROUNDS rounds each (300 in the
# issue; as many as the machine allows, stated with the results). A run ends
# at the first round at 99% (stop_at_target): the rounds after it are not
# what this table measures.
#
#   bash experiments/strategies.sh OUT_DIR [ROUNDS]
#   STRATEGIES="fedavg fedyogi" PARTITIONS=shards bash experiments/strategies.sh OUT 100
#
# Appends a row per run to OUT_DIR/strategies.csv and skips runs already there.
# A run folder with a checkpoint (an interrupted run, or a shorter one) is
# continued with fl-sim --resume up to ROUNDS; its seconds column then counts
# the last invocation only.
# Server learning rates: each strategy's default (fedadagrad 0.1, fedadam and
# fedyogi 0.01, the others 1); fedprox mu 0.01; fedavgm momentum 0.9 with
# server lr 0.1 (Hsu et al.'s effective step); the robust rules with f = 1.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:?usage: strategies.sh OUT_DIR [ROUNDS]}"
ROUNDS="${2:-300}"
SIM="$ROOT/build/bin/fl-sim"
STRATEGIES="${STRATEGIES:-fedavg fedavgm fedadagrad fedadam fedyogi fedprox median trimmed_mean multikrum}"
PARTITIONS="${PARTITIONS:-iid shards}"
mkdir -p "$OUT"
CSV="$OUT/strategies.csv"
[ -s "$CSV" ] || echo "partition,strategy,rounds,to_97,to_98,to_99,final_accuracy,seconds" > "$CSV"
json() { sed -n "s/.*\"$2\": \([^,]*\),*$/\1/p" "$1" | head -1; }
for part in $PARTITIONS; do
  for strategy in $STRATEGIES; do
    grep -q "^$part,$strategy,$ROUNDS," "$CSV" && continue
    lr=0.15
    [ "$part" = shards ] && lr=0.1
    server_lr=0
    [ "$strategy" = fedavgm ] && server_lr=0.1
    dir="$OUT/${part}_$strategy"
    mkdir -p "$dir"
    cat > "$dir.toml" <<TOML
seed = 1
rounds = $ROUNDS
targets = [0.97, 0.98, 0.99]
stop-at-target = true
data = "$ROOT/data/mnist"
partition = "$part"
shards-per-client = 2
model = "mnist_cnn"
clients = 100
fraction = 0.1
deadline = 600
strategy = "$strategy"
server-lr = $server_lr
mu = 0.01
krum-f = 1
epochs = 5
batch = 10
lr = $lr
sparsity = 0.9
uplink-bits = 8
out = "$dir"
TOML
    resume=()
    compgen -G "$dir/checkpoint.fl*" >/dev/null && resume=(--resume)
    t0=$(date +%s)
    "$SIM" --config "$dir.toml" "${resume[@]}" --quiet > "$dir.log" 2>&1 || { echo "run $dir failed (see $dir.log)"; continue; }
    to() { awk -F, -v t="$1" 'NR > 1 && $3 != "" && $3 + 0 >= t { print $1; exit }' "$dir/rounds.csv"; }
    echo "$part,$strategy,$ROUNDS,$(to 0.97),$(to 0.98),$(to 0.99),$(json "$dir/summary.json" final_accuracy),$(( $(date +%s) - t0 ))" >> "$CSV"
    tail -1 "$CSV"
  done
done
