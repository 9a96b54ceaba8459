#!/usr/bin/env bash
# The README's first command: set up the machine, build, pretrain a small NEPA ViT on the embedded Fashion-MNIST
# data (configs/pretrain/fmnist_tiny.yaml; k-NN top-1 at random init and after pretraining), then linear-probe
# the frozen backbone against the same probe on the randomly initialised backbone
# (configs/finetune/fmnist_tiny_linprobe.yaml). Extra arguments go to nepa_pretrain (e.g. --set ...).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$REPO/scripts/setup.sh"
cd "$REPO"
BIN="${NEPA_BUILD:-$REPO/build}/apps"
RUN="runs/fmnist_tiny-$(date +%Y%m%d-%H%M%S)"
"$BIN/nepa_pretrain" --config configs/pretrain/fmnist_tiny.yaml --output-dir "$RUN" "$@"
"$BIN/nepa_finetune" --config configs/finetune/fmnist_tiny_linprobe.yaml --output-dir "$RUN/linprobe" \
  --init "$RUN/final"
"$BIN/nepa_finetune" --config configs/finetune/fmnist_tiny_linprobe.yaml --output-dir "$RUN/linprobe_random"

last_top1() { grep '"kind":"eval"' "$1/metrics.jsonl" | tail -1 | sed 's/.*"top1":\([0-9.]*\).*/\1/'; }
printf '\nLinear probe (frozen backbone, 1 epoch), top-1 on the 10,000 Fashion-MNIST test images:\n'
printf '  NEPA-pretrained backbone  %6.2f %%\n' "$(last_top1 "$RUN/linprobe")"
printf '  random-init backbone      %6.2f %%\n' "$(last_top1 "$RUN/linprobe_random")"
printf 'run directory: %s\n' "$RUN"
