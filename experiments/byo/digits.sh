#!/usr/bin/env bash
# A non-MNIST task end to end with TorchScript models: scikit-learn's digits
# (1,797 8x8 grey images of 10 digits, Debian's python3-sklearn), as a CSV of
# 64 features for an MLP and as class folders of PGM images for a small CNN,
# both written by fl-make-model. For each: central training (fl-local, one
# client holding everything), dense FedAvg and the 90%-sparse 8-bit
# federation (fl-sim, K=10, C=0.5, E=5, B=10; ERK layer-wise sparsity at
# initialisation), test split carved with
# --test-fraction 0.2. Prints one table row per run.
#
#   bash experiments/byo/digits.sh OUT_DIR [ROUNDS]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="${1:?usage: digits.sh OUT_DIR [ROUNDS]}"
ROUNDS="${2:-50}"
BIN="$ROOT/build/bin"
PY=/usr/bin/python3  # Debian's, where python3-sklearn lives
mkdir -p "$OUT"
"$PY" - "$OUT" <<'PY'
import os, sys
from sklearn.datasets import load_digits
out = sys.argv[1]
d = load_digits()
with open(os.path.join(out, "digits.csv"), "w") as f:
    f.write(",".join("p%d" % i for i in range(64)) + ",digit\n")
    for x, y in zip(d.data, d.target):
        f.write(",".join("%d" % v for v in x) + ",%d\n" % y)
# Class folders of 8x8 PGM images, values 0..16 scaled to 0..255.
for i, (img, y) in enumerate(zip(d.images, d.target)):
    folder = os.path.join(out, "digits_images", str(y))
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "%04d.pgm" % i), "wb") as f:
        f.write(b"P5 8 8 255\n" + bytes(int(round(v * 255 / 16)) for v in img.flatten()))
PY
"$BIN/fl-make-model" --mlp 64,128,10 --out "$OUT/digits_mlp.pt" > /dev/null
"$BIN/fl-make-model" --cnn 1,8,8,10 --out "$OUT/digits_cnn.pt" > /dev/null
echo "task,run,rounds,final_accuracy,best_accuracy,best_round,upload_bytes,download_bytes,seconds"
for task in mlp cnn; do
  if [ $task = mlp ]; then data="$OUT/digits.csv"; else data="$OUT/digits_images"; fi
  model="$OUT/digits_$task.pt"
  # Central: one client holding the whole training split, as many epochs as
  # the federation's rounds x local epochs reach on average per sample.
  t0=$(date +%s)
  acc=$("$BIN/fl-local" --data "$data" --test-fraction 0.2 --model "$model" --clients 1 \
        --epochs 50 --batch 10 --lr 0.05 2>/dev/null | sed -n 's/^test accuracy after *\([0-9.]*\)%.*/\1/p')
  echo "$task,central (50 epochs),,$acc,,,,,$(( $(date +%s) - t0 ))"
  # Pruned at initialisation by ERK: ranked globally, the MLP's classifier
  # (smaller initial weights) would lose every weight, which fl-sim refuses.
  for run in dense sparse90_q8; do
    extra=(--uplink-bits 32)
    [ $run = sparse90_q8 ] && extra=(--erk --uplink-bits 8 --sparsity 0.9)
    dir="$OUT/${task}_$run"
    t0=$(date +%s)
    "$BIN/fl-sim" --data "$data" --test-fraction 0.2 --model "$model" --clients 10 \
      --fraction 0.5 -E 5 --lr 0.05 --rounds "$ROUNDS" --out "$dir" "${extra[@]}" --quiet \
      > "$dir.log" 2>&1 || { echo "$task,$run failed (see $dir.log)"; continue; }
    best=$(awk -F, 'NR > 1 && $3 != "" && $3 + 0 > b { b = $3; r = $1 } END { print b * 100 "," r }' "$dir/rounds.csv")
    json() { sed -n "s/.*\"$1\": \([^,]*\),*$/\1/p" "$dir/summary.json" | head -1; }
    facc=$(awk -v a="$(json final_accuracy)" 'BEGIN { print a * 100 }')
    echo "$task,$run,$ROUNDS,$facc,$best,$(json upload_bytes),$(json download_bytes),$(( $(date +%s) - t0 ))"
  done
done
