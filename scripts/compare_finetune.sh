#!/usr/bin/env bash
# Fine-tunes the same classifier from a pretrained backbone and from random init with several seeds, same
# config and budget, and prints top-1 (plain and EMA) per seed and mean +- std.
#   scripts/compare_finetune.sh runs/fmnist_tiny-<date>/final [seeds=3] [config] [--set key=value ...]
# The seed is train.seed: head init, data order and augmentation (the backbone is the one given). Runs go to
# $COMPARE_DIR (default <backbone>/../compare_finetune)/<init>_seed<N>; a finished one is not run again, so give
# each setting its own COMPARE_DIR. COMPARE_INITS (default "nepa random") picks the inits: nepa = the backbone,
# ema = the pretraining run's EMA export beside it (<backbone>_ema, i.e. final_ema/), random = no init.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if (($# < 1)); then
  echo "usage: $0 BACKBONE [SEEDS [CONFIG [--set key=value ...]]]" >&2
  exit 2
fi
BACKBONE=$1
SEEDS=${2:-3}
CONFIG=${3:-configs/finetune/fmnist_tiny.yaml}
shift $(($# < 3 ? $# : 3))
BIN="${NEPA_BUILD:-$REPO/build}/apps/nepa_finetune"
OUT="${COMPARE_DIR:-$(dirname "$BACKBONE")/compare_finetune}"
mkdir -p "$OUT"

last_eval() {  # prints "top1 ema_top1" of the run's last evaluation
  grep '"kind":"eval"' "$1/metrics.jsonl" | tail -1 |
    awk '{ t = e = "nan"; if (match($0, /"top1":[0-9.]+/)) t = substr($0, RSTART + 7, RLENGTH - 7);
           if (match($0, /"ema_top1":[0-9.]+/)) e = substr($0, RSTART + 11, RLENGTH - 11); print t, e }'
}

read -r -a INITS <<<"${COMPARE_INITS:-nepa random}"
declare -A RESULT
for ((s = 0; s < SEEDS; s++)); do
  seed=$((1337 + s))
  for init in "${INITS[@]}"; do
    run="$OUT/${init}_seed$seed"
    if [[ ! -f "$run/final/model.safetensors" ]]; then
      rm -rf "$run"
      args=(--config "$CONFIG" --output-dir "$run" --set "train.seed=$seed" "$@")
      case $init in
        nepa) args+=(--init "$BACKBONE") ;;
        ema) args+=(--init "${BACKBONE%/}_ema") ;;
        random) ;;
        *) echo "COMPARE_INITS: unknown init '$init' (nepa, ema, random)" >&2; exit 2 ;;
      esac
      "$BIN" "${args[@]}" >"$run.log" 2>&1 || { echo "fine-tune failed; see $run.log" >&2; exit 1; }
    fi
    RESULT[$init,$seed]="$(last_eval "$run")"
  done
done

printf '\nFine-tune top-1 (%%) on the evaluation split, %s, %d seeds:\n' "$CONFIG" "$SEEDS"
printf '%-8s %-10s %8s %8s\n' seed init top1 ema_top1
for ((s = 0; s < SEEDS; s++)); do
  seed=$((1337 + s))
  for init in "${INITS[@]}"; do
    read -r t e <<<"${RESULT[$init,$seed]}"
    printf '%-8s %-10s %8s %8s\n' "$seed" "$init" "$t" "$e"
  done
done
for init in "${INITS[@]}"; do
  vals=""
  for ((s = 0; s < SEEDS; s++)); do vals+="${RESULT[$init,$((1337 + s))]} "; done
  echo "$vals" | awk -v init="$init" '{
    n = 0; for (i = 1; i <= NF; i += 2) { t[n] = $i; e[n] = $(i + 1); n++ }
    for (k = 0; k < n; k++) { mt += t[k]; me += e[k] } mt /= n; me /= n
    for (k = 0; k < n; k++) { vt += (t[k] - mt)^2; ve += (e[k] - me)^2 }
    st = n > 1 ? sqrt(vt / (n - 1)) : 0; se = n > 1 ? sqrt(ve / (n - 1)) : 0
    printf "%-8s %-10s %5.2f +- %4.2f   EMA %5.2f +- %4.2f\n", "mean", init, mt, st, me, se }'
done
