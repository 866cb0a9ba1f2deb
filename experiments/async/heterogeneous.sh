#!/usr/bin/env bash
# Time to accuracy on a heterogeneous fleet: MNIST CNN, IID, K=100, C=0.1,
# E=5, B=10, lr 0.15; 30% of the devices 10x slower than this machine, every
# device dropping out of 10% of its tasks (fl-sim --straggler-fraction, --dropout). Runs: sync
# FedAvg, sync FedAvg with over-selection 1.3 (Bonawitz et al. 2019), and
# FedBuff (mode async: 10 devices training at all times, as many as a sync
# round selects; a server step every BUFFER updates, default 3; staleness
# exponent 0.5; tasks more than MAX_STALENESS steps old given up, default 2;
# STRATEGY and SERVER_LR set the server's rule, default fedavg at 1.0), each
# until 97% test accuracy (--stop-at-target) or ROUNDS rounds (server steps in
# async).
# SPARSE=1: 90% sparse at initialisation (ERK) with 8-bit uplink deltas (EF=0: without
# error feedback).
#
#   bash experiments/async/heterogeneous.sh OUT_DIR [ROUNDS]
#
# Appends a row per run to OUT_DIR/heterogeneous.csv: wall seconds and uplink
# bytes until 97% (summary.json's wall_seconds_to_target and
# upload_bytes_to_target). A round's deadline is 60 s: a sync round whose
# selected device dropped out waits for it that long.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="${1:?usage: heterogeneous.sh OUT_DIR [ROUNDS]}"
ROUNDS="${2:-30}"
SIM="$ROOT/build/bin/fl-sim"
MODES="${MODES:-sync over_selection async}"
BUFFER="${BUFFER:-3}"
STRATEGY="${STRATEGY:-fedavg}"  # e.g. fedavgm: FedBuff with server momentum
SERVER_LR="${SERVER_LR:-1.0}"
MAX_STALENESS="${MAX_STALENESS:-2}"
mkdir -p "$OUT"
CSV="$OUT/heterogeneous.csv"
[ -s "$CSV" ] || echo "mode,sparse,strategy,rounds,to_97,seconds_to_97,upload_bytes_to_97,final_accuracy,wall_seconds" > "$CSV"
json() { sed -n "s/.*\"$2\": \([^,}]*\).*/\1/p" "$1" | head -1; }
sparse="${SPARSE:-0}"
for mode in $MODES; do
  over=1
  [ "$mode" = over_selection ] && over=1.3
  scheduler=$'mode = "sync"'
  [ "$mode" = async ] && scheduler=$'mode = "async"\nconcurrency = 10\nbuffer = '"$BUFFER"$'\nstaleness-exponent = 0.5\nmax-staleness = '"$MAX_STALENESS"
  steps=$ROUNDS
  [ "$mode" = async ] && steps=$((ROUNDS * 10 / BUFFER))
  compression=""
  [ "$sparse" = 1 ] && compression=$'sparsity = 0.9\nerk = true\nuplink-bits = 8'
  [ "$sparse" = 1 ] && [ "${EF:-1}" = 0 ] && compression+=$'\nno-error-feedback = true'
  dir="$OUT/${mode}_sparse${sparse}_$STRATEGY"
  cat > "$dir.toml" <<TOML
seed = 1
rounds = $steps
targets = [0.97]
stop-at-target = true
data = "$ROOT/data/mnist"
partition = "iid"
model = "mnist_cnn"
clients = 100
fraction = 0.1
deadline = 60
over-selection = $over
$scheduler
strategy = "$STRATEGY"
server-lr = $SERVER_LR
epochs = 5
batch = 10
lr = 0.15
straggler-fraction = 0.3
straggler-slowdown = 10.0
dropout = 0.1
$compression
TOML
  "$SIM" --config "$dir.toml" --out "$dir" > "$dir.log" 2>&1
  s="$dir/summary.json"
  to97=$(sed -n 's/.*"rounds_to_target": {"0.97": \([^}]*\)}.*/\1/p' "$s")
  secs=$(sed -n 's/.*"wall_seconds_to_target": {"0.97": \([^}]*\)}.*/\1/p' "$s")
  bytes=$(sed -n 's/.*"upload_bytes_to_target": {"0.97": \([^}]*\)}.*/\1/p' "$s")
  echo "$mode,$sparse,$STRATEGY,$(json "$s" rounds_completed),$to97,$secs,$bytes,$(json "$s" final_accuracy),$(json "$s" wall_seconds)" >> "$CSV"
  tail -1 "$CSV"
done
