#!/usr/bin/env bash
# Robustness table: test accuracy after ROUNDS rounds with 0/10/20/30% malicious
# virtual clients of each kind (fl-sim [adversary]), for fedavg, median,
# trimmed_mean, multikrum and fedavg with norm clipping. MNIST CNN, K=100,
# C=0.1, E=1, B=10, IID, 90% sparse, 8-bit uplink. The robust rules are told
# the attackers' share: trim_fraction = the fraction, krum_f = the expected
# attackers per round (fraction x 10); RULE@X overrides that (trimmed_mean@0.4,
# multikrum@3): the number of attackers in a round of 10 varies around its
# mean, and a rule told the mean is exceeded in some rounds. Clipping uses CLIP
# (default 0.5, about the median honest delta norm of the clean run).
#
#   bash experiments/robustness.sh OUT_DIR [ROUNDS]
#
# Appends one CSV row per run to OUT_DIR/robustness.csv and skips runs already
# there, so an interrupted sweep continues where it stopped. Order: 20% first
# (the issue's target), then 10%, then 30%.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:?usage: robustness.sh OUT_DIR [ROUNDS]}"
ROUNDS="${2:-20}"
CLIP="${CLIP:-0.5}"
SIM="$ROOT/build/bin/fl-sim"
KINDS="${KINDS:-sign_flip scale noise label_flip same_value}"
RULES="${RULES:-fedavg median trimmed_mean multikrum clip}"
FRACTIONS="${FRACTIONS:-0.2 0.1 0.3}"
mkdir -p "$OUT"
CSV="$OUT/robustness.csv"
[ -s "$CSV" ] || echo "kind,fraction,rule,final_accuracy,seconds" > "$CSV"
json() { sed -n "s/.*\"$2\": \([^,]*\),*$/\1/p" "$1" | head -1; }

run() {  # kind fraction rule
  local kind="$1" frac="$2" rule="$3"
  if grep -q "^$kind,$frac,$rule," "$CSV"; then return; fi
  local name="${kind}_${frac}_${rule}" strategy="${rule%@*}" clip=0
  [ "$rule" = clip ] && { strategy=fedavg; clip="$CLIP"; }
  local f; f=$(awk -v x="$frac" 'BEGIN { printf "%d", x * 10 + 0.5 }')
  [ "$f" -ge 1 ] || f=1
  local trim; trim=$(awk -v x="$frac" 'BEGIN { print (x > 0 ? x : 0.1) }')
  # RULE@X: trimmed_mean@0.4 trims 40% at each end, multikrum@3 assumes f = 3.
  if [ "$rule" != "${rule%@*}" ]; then
    case "$strategy" in
      trimmed_mean) trim="${rule#*@}" ;;
      multikrum|krum) f="${rule#*@}" ;;
    esac
  fi
  local dir="$OUT/$name" tkind="$kind"
  [ "$kind" = none ] && tkind=sign_flip  # with fraction 0: nobody attacks
  mkdir -p "$dir"
  cat > "$dir.toml" <<TOML
seed = 1
rounds = $ROUNDS
targets = [0.97, 0.98, 0.99]
data = "$ROOT/data/mnist"
partition = "iid"
model = "mnist_cnn"
clients = 100
fraction = 0.1
deadline = 60
strategy = "$strategy"
clip = $clip
trim-fraction = $trim
krum-f = $f
adversary-fraction = $frac
adversary-kind = "$tkind"
adversary-scale = 10
epochs = 1
batch = 10
lr = 0.05
sparsity = 0.9
uplink-bits = 8
out = "$dir"
secure = false
TOML
  local t0; t0=$(date +%s)
  "$SIM" --config "$dir.toml" --quiet > "$dir.log" 2>&1 || { echo "run $name failed (see $dir.log)"; return; }
  local acc; acc=$(json "$dir/summary.json" final_accuracy)
  echo "$kind,$frac,$rule,$acc,$(( $(date +%s) - t0 ))" >> "$CSV"
  echo "$name: $acc"
}

for rule in $RULES; do run none 0 "$rule"; done
for frac in $FRACTIONS; do
  for kind in $KINDS; do
    for rule in $RULES; do run "$kind" "$frac" "$rule"; done
  done
done
