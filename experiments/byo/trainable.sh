#!/usr/bin/env bash
# On-device transfer learning, measured on the FedAvg CNN: one fl-server and
# one fl-client process (a 600-sample device folder, E=5, B=10, 8-bit uplink),
# every tensor training against only the classifier (--trainable 'fc2.*').
# Prints the client's training time per round, its peak RSS, and the bytes of
# each update.
#
#   bash experiments/byo/trainable.sh OUT_DIR [ROUNDS]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="${1:?usage: trainable.sh OUT_DIR [ROUNDS]}"
ROUNDS="${2:-3}"
BIN="$ROOT/build/bin"
mkdir -p "$OUT"
[ -d "$OUT/devices/c0" ] || "$BIN/fl-partition" --data "$ROOT/data/mnist" --partition iid \
  --clients 100 --only 1 --out "$OUT/devices" > /dev/null
echo "trainable,parameters_trained,train_seconds_per_round,client_peak_rss_MiB,update_bytes"
for trainable in all 'fc2.*'; do
  tag=$([ "$trainable" = all ] && echo all || echo classifier)
  extra=()
  [ "$trainable" = all ] || extra=(--trainable "$trainable")
  rm -rf "$OUT/$tag"
  "$BIN/fl-server" --bind 'tcp://127.0.0.1:*' --model mnist_cnn --rounds "$ROUNDS" \
    --min-clients 1 --fraction 1 --epochs 5 --batch 10 --lr 0.05 --uplink-bits 8 --no-eval \
    --out "$OUT/$tag" --linger 1 --insecure "${extra[@]}" > "$OUT/$tag.server.log" 2>&1 &
  server=$!
  for _ in $(seq 100); do
    grep -q "serving " "$OUT/$tag.server.log" && break
    sleep 0.2
  done
  ep=$(sed -n 's/.*serving .* on \(tcp:\/\/127.0.0.1:[0-9]*\).*/\1/p' "$OUT/$tag.server.log" | head -1)
  /usr/bin/time -f "%M" -o "$OUT/$tag.rss" "$BIN/fl-client" --server "$ep" --id c0 \
    --data "$OUT/devices/c0" --partition none --model mnist_cnn --threads 1 --insecure \
    > "$OUT/$tag.client.log" 2>&1
  wait $server
  trained=$(sed -n 's/.*trainable: .* (\([0-9]*\) of .*/\1/p' "$OUT/$tag.server.log")
  [ -n "$trained" ] || trained="all"
  secs=$(sed -n 's/.* received, \([0-9.]*\) s training.*/\1/p' "$OUT/$tag.client.log")
  secs=$(awk -v s="$secs" -v r="$ROUNDS" 'BEGIN { printf "%.2f", s / r }')
  bytes=$(awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "upload_bytes") c = i }
                   NR > 1 { b = $c } END { print b }' "$OUT/$tag/rounds.csv")
  echo "$trainable,$trained,$secs,$(( $(cat "$OUT/$tag.rss") / 1024 )),$bytes"
done
