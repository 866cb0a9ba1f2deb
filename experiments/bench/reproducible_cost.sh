#!/usr/bin/env bash
# What --reproducible costs, and what it buys, on this machine.
#
#   1. Local training throughput (fl-bench-train, one intra-op thread, batch 10)
#      as the libraries pick their kernels and with --reproducible, alternated
#      REPEATS times so that both see the same machine load.
#   2. A 3-round fl-sim CNN run (mnist_cnn, 20 clients of 3,000 examples, 4 a
#      round, seed 7) with and without
#      --reproducible: its wall time, and the global.flm version under two ISA
#      settings of the environment (what an AVX2 machine and an older-ISA one
#      would pick: ATen avx2 / OpenBLAS Zen / oneDNN AVX2 against ATen default /
#      OpenBLAS Prescott / oneDNN SSE41). With --reproducible the versions must
#      be equal (the pinned environment replaces both); without it they differ
#      wherever the kernels do.
#
#   bash experiments/bench/reproducible_cost.sh [BUILD_DIR] [OUT_DIR]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN="${1:-$ROOT/build}/bin"
OUT="${2:-/tmp/fedge-reproducible}"
REPEATS="${REPEATS:-3}"
DATA="${FEDGE_DATA_DIR:-$ROOT/data/mnist}"
mkdir -p "$OUT"

echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
echo "date: $(date -u +%Y-%m-%d)"
echo
echo "== local training throughput (fl-bench-train --samples 3000), samples/s =="
for i in $(seq 1 "$REPEATS"); do
  for mode in default reproducible; do
    flag=""
    [ "$mode" = reproducible ] && flag="--reproducible"
    "$BIN/fl-bench-train" --data "$DATA" --model mnist_2nn --model mnist_cnn $flag \
      | awk -v m="$mode" -v i="$i" '/^mnist_/ {printf "run %d %-13s %-10s %8s samples/s  round %s s\n", i, m, $1, $4, $5}'
  done
done

echo
echo "== fl-sim, mnist_cnn, 3 rounds, 20 clients (4 a round), seed 7: wall time, global.flm =="
ISA_A=(ATEN_CPU_CAPABILITY=avx2 OPENBLAS_CORETYPE=Zen ONEDNN_MAX_CPU_ISA=AVX2)
ISA_B=(ATEN_CPU_CAPABILITY=default OPENBLAS_CORETYPE=Prescott ONEDNN_MAX_CPU_ISA=SSE41)
sim() {  # NAME ENV... -- FLAGS...
  local name="$1"; shift
  local envs=()
  while [ "$1" != "--" ]; do envs+=("$1"); shift; done
  shift
  local t0 t1
  t0=$(date +%s.%N)
  env "${envs[@]}" "$BIN/fl-sim" --model mnist_cnn --clients 20 --fraction 0.2 --rounds 3 \
    --epochs 1 --seed 7 --data "$DATA" --out "$OUT/$name" --quiet "$@" > "$OUT/$name.log" 2>&1
  t1=$(date +%s.%N)
  printf "%-22s %6.1f s  global.flm sha256 %s\n" "$name" "$(echo "$t1 - $t0" | bc)" \
    "$(sha256sum "$OUT/$name/global.flm" | cut -c1-16)"
}
sim default-isa-a "${ISA_A[@]}" --
sim default-isa-b "${ISA_B[@]}" --
sim reproducible-isa-a "${ISA_A[@]}" -- --reproducible
sim reproducible-isa-b "${ISA_B[@]}" -- --reproducible
grep -h '"reproducible"\|"kernels"\|"seed"' "$OUT/reproducible-isa-a/summary.json"
