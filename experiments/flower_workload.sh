#!/usr/bin/env bash
# The FedAvg-paper MNIST CNN workload as Flower users run it, on fedge as a real
# deployment: one fl-server and 10 fl-client processes on 127.0.0.1, each client
# with its own folder of 600 IID training images (written by fl-partition), E=1, B=10, SGD lr 0.05, C=1
# (all 10 clients every round), 5 rounds, the server evaluating the 10k test
# images. Peak RSS of every process comes from /usr/bin/time -v.
#
# Runs three modes, each twice (evaluation every round, and only after the
# last round):
#   plain       --insecure, dense fp32 model, 32-bit deltas
#   secure      identities from fl-keygen, enrollment, CURVE, signed messages
#   compressed  plain + 90% sparse model, 8-bit deltas up, fp16 model down
# and prints one table row per run (the rows in experiments/BENCHMARKS.md).
#
#   bash experiments/flower_workload.sh [OUT_DIR] [MODES...]
#   e.g. bash experiments/flower_workload.sh runs/flower plain
# SERVER_ARGS adds flags to every fl-server, e.g. SERVER_ARGS="--upload-window-mb 0";
# SERVER_PREFIX runs it under a tool, e.g. SERVER_PREFIX="heaptrack -o /tmp/server".
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$(mkdir -p "${1:-$ROOT/runs/flower_workload}" && cd "${1:-$ROOT/runs/flower_workload}" && pwd)"
shift || true
MODES=("$@")
[ ${#MODES[@]} -gt 0 ] || MODES=(plain secure compressed)
BIN="$ROOT/build/bin"
MNIST="$ROOT/data/mnist"
CLIENTS=10
ROUNDS=5
PER_CLIENT=600
PORT="${PORT:-27555}"

[ -x "$BIN/fl-server" ] || { echo "build first: bash scripts/build.sh" >&2; exit 1; }
[ -f "$MNIST/train-images-idx3-ubyte" ] || { echo "no MNIST: bash scripts/setup.sh" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "needs GNU time: apt-get install time" >&2; exit 1; }

# 1. A folder of 600 training images per client: the first 10 of 100 IID
# shards of MNIST's 60k training images (fl-partition, seed 1).
if [ ! -f "$OUT/data/c$((CLIENTS - 1))/train-labels-idx1-ubyte" ]; then
  "$BIN/fl-partition" --data "$MNIST" --partition iid --clients $((60000 / PER_CLIENT)) \
    --only $CLIENTS --seed 1 --out "$OUT/data" >/dev/null
fi

# Identities for the secure mode (made once).
KEYS="$OUT/keys"
if [ ! -f "$KEYS/server.key" ]; then
  mkdir -p "$KEYS/enrolled"
  "$BIN/fl-keygen" --out "$KEYS" --name server >/dev/null
  for k in $(seq 0 $((CLIENTS - 1))); do
    "$BIN/fl-keygen" --out "$KEYS" --name "c$k" >/dev/null
    cp "$KEYS/c$k.pub" "$KEYS/enrolled/"
  done
fi

peak_mib() { awk -F': ' '/Maximum resident set size/ {printf "%.0f", $2 / 1024}' "$1"; }

printf '| mode | evaluation | round s (median) | wall s per round incl. evaluation | participants per round | accuracy after %d | server peak RSS MiB | client peak RSS MiB (max) | up bytes/client/round | down bytes/client/round |\n' $ROUNDS
printf '|---|---|---|---|---|---|---|---|---|---|\n'
for mode in "${MODES[@]}"; do
  for eval in every end; do
    RUN="$OUT/$mode-$eval"
    rm -rf "$RUN"
    mkdir -p "$RUN"
    server_args=(--bind "tcp://127.0.0.1:$PORT" --model mnist_cnn --rounds $ROUNDS --fraction 1
                 --min-clients $CLIENTS --epochs 1 --batch 10 --lr 0.05 --deadline 300
                 --data "$MNIST" --out "$RUN/out")
    [ "$eval" = every ] && server_args+=(--eval-every 1) || server_args+=(--eval-every 1000)
    # shellcheck disable=SC2206
    server_args+=(${SERVER_ARGS:-})
    client_common=(--server "tcp://127.0.0.1:$PORT" --threads 1)
    case "$mode" in
      plain) server_args+=(--insecure); client_common+=(--insecure) ;;
      secure) server_args+=(--key "$KEYS/server.key" --clients "$KEYS/enrolled") ;;
      compressed) server_args+=(--insecure --sparsity 0.9 --uplink-bits 8 --downlink fp16)
                  client_common+=(--insecure) ;;
      *) echo "unknown mode $mode (plain, secure, compressed)" >&2; exit 2 ;;
    esac
    # shellcheck disable=SC2086
    /usr/bin/time -v -o "$RUN/server.time" ${SERVER_PREFIX:-} "$BIN/fl-server" "${server_args[@]}" > "$RUN/server.log" 2>&1 &
    server_pid=$!
    pids=()
    for k in $(seq 0 $((CLIENTS - 1))); do
      args=("${client_common[@]}" --data "$OUT/data/c$k")
      if [ "$mode" = secure ]; then
        args+=(--key "$KEYS/c$k.key" --server-key "$KEYS/server.pub")
      else
        args+=(--id "c$k")
      fi
      /usr/bin/time -v -o "$RUN/c$k.time" "$BIN/fl-client" "${args[@]}" > "$RUN/c$k.log" 2>&1 &
      pids+=($!)
    done
    wait $server_pid || { echo "fl-server failed: see $RUN/server.log" >&2; exit 1; }
    for p in "${pids[@]}"; do wait "$p" || echo "a client failed: see $RUN/c*.log" >&2; done
    csv="$RUN/out/rounds.csv"
    median_round=$(tail -n +2 "$csv" | cut -d, -f7 | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    parts=$(tail -n +2 "$csv" | cut -d, -f2 | paste -sd, -)
    acc=$(tail -n 1 "$csv" | awk -F, '{printf "%.2f%%", 100 * $3}')
    up=$(tail -n +2 "$csv" | awk -F, -v n=$CLIENTS '{s += $5} END {printf "%.0f", s / NR / n}')
    down=$(tail -n +2 "$csv" | awk -F, -v n=$CLIENTS '{s += $6} END {printf "%.0f", s / NR / n}')
    # Wall time per round with evaluation: round 1's selection to the last
    # evaluation's row, over the rounds (evaluation overlaps the next round).
    ts() { grep -m1 "$1" "$RUN/server.log" | sed -E 's/^\[([^]]+)\].*/\1/'; }
    t0=$(date -d "$(ts 'round 1: selected')" +%s.%N)
    t1=$(date -d "$(ts "round $ROUNDS: .*updates")" +%s.%N)
    wall=$(echo "$t0 $t1 $ROUNDS" | awk '{printf "%.2f", ($2 - $1) / $3}')
    client_rss=0
    for k in $(seq 0 $((CLIENTS - 1))); do
      r=$(peak_mib "$RUN/c$k.time"); [ "$r" -gt "$client_rss" ] && client_rss=$r
    done
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$mode" \
      "$([ "$eval" = every ] && echo "every round" || echo "after round $ROUNDS")" \
      "$median_round" "$wall" "$parts" "$acc" "$(peak_mib "$RUN/server.time")" "$client_rss" \
      "$up" "$down"
  done
done
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores; runs in $OUT"
