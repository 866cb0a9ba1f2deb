#!/usr/bin/env bash
# Payloads keep working across versions: this build's fl-server with fl-client
# processes of another build (OLD_CLIENT), as separate processes over TCP.
# Runs FedAvg, then FedProx (whose mu an older client does not know: it must
# still train and be accepted), 3 rounds each, 3 clients, MNIST 2NN, plaintext.
#
#   bash experiments/compat_check.sh OLD_CLIENT [OUT_DIR]
#
# Prints each run's rounds.csv and whether every round had all 3 updates.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OLD="${1:?usage: compat_check.sh OLD_CLIENT [OUT_DIR]}"
OUT="${2:-$(mktemp -d)}"
SERVER="$ROOT/build/bin/fl-server"
DATA="$ROOT/data/mnist"
status=0
for strategy in fedavg fedprox; do
  dir="$OUT/$strategy"
  mkdir -p "$dir"
  port=$(( 21000 + RANDOM % 2000 ))
  "$SERVER" --bind "tcp://127.0.0.1:$port" --model mnist_2nn --rounds 3 --min-clients 3 \
    --fraction 1 --deadline 60 --no-eval --out "$dir/out" --insecure --strategy "$strategy" \
    --linger 2 > "$dir/server.log" 2>&1 &
  spid=$!
  sleep 1
  pids=()
  for k in 0 1 2; do
    "$OLD" --server "tcp://127.0.0.1:$port" --id "old$k" --data "$DATA" --partition iid \
      --num-partitions 3 --partition-index "$k" --heartbeat 0.5 --insecure > "$dir/client$k.log" 2>&1 &
    pids+=($!)
  done
  wait "$spid" || { echo "$strategy: server failed (see $dir/server.log)"; status=1; }
  for p in "${pids[@]}"; do wait "$p" || true; done
  echo "== $strategy: $dir/out/rounds.csv"
  cat "$dir/out/rounds.csv"
  full=$(awk -F, 'NR > 1 && $2 == 3' "$dir/out/rounds.csv" | wc -l)
  echo "rounds with all 3 updates: $full of 3"
  [ "$full" -eq 3 ] || status=1
  grep -h "predates optional TASK fields" "$dir/server.log" | head -1 || true
done
exit $status
