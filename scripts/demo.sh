#!/usr/bin/env bash
# The README's first command: set up the machine, build, pretrain a small NEPA ViT on the embedded Fashion-MNIST
# data with 2 data-parallel processes (configs/pretrain/fmnist_tiny.yaml; k-NN top-1 at random init and after
# pretraining), then compare the pretrained backbone with the same backbone at random init under the same budget:
# a linear probe of the frozen backbone (configs/finetune/fmnist_tiny_linprobe.yaml) and a full fine-tune
# (configs/finetune/fmnist_tiny.yaml), 234 steps each; then UPerNet segmentation of Fashion-MNIST scenes from
# the same backbone and from random init (scripts/demo_seg.sh). Extra arguments go to nepa_pretrain (e.g. --set ...).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$REPO/scripts/setup.sh"
cd "$REPO"
SUFFIX=""; [ "${NEPA_CUDA:-13}" = 12 ] && SUFFIX="-cu12"  # as scripts/setup.sh
BIN="${NEPA_BUILD:-$REPO/build$SUFFIX}/apps"
RUN="runs/fmnist_tiny-$(date +%Y%m%d-%H%M%S)"
# Two single-threaded processes are ~20 % faster than one process with two threads on a 2-core machine, and
# give the same weights as one process with micro-batch 128 (to float rounding).
scripts/launch_local.sh 2 "$BIN/nepa_pretrain" --config configs/pretrain/fmnist_tiny.yaml --output-dir "$RUN" \
  --set train.micro_batch=64 "$@"
for init in nepa random; do
  from=()
  [[ $init == nepa ]] && from=(--init "$RUN/final")
  "$BIN/nepa_finetune" --config configs/finetune/fmnist_tiny_linprobe.yaml --output-dir "$RUN/linprobe_$init" "${from[@]}"
  "$BIN/nepa_finetune" --config configs/finetune/fmnist_tiny.yaml --output-dir "$RUN/finetune_$init" "${from[@]}"
done

last_top1() { grep '"kind":"eval"' "$1/metrics.jsonl" | tail -1 | sed 's/.*"top1":\([0-9.]*\).*/\1/'; }
printf '\nTop-1 on the 10,000 Fashion-MNIST test images; both inits get the same recipe and budget: 234 steps\n'
printf 'of 128 labelled images (half an epoch, each image seen once):\n'
printf '                             linear probe   fine-tune\n'
printf '  NEPA-pretrained backbone     %6.2f %%     %6.2f %%\n' "$(last_top1 "$RUN/linprobe_nepa")" \
  "$(last_top1 "$RUN/finetune_nepa")"
printf '  random-init backbone         %6.2f %%     %6.2f %%\n' "$(last_top1 "$RUN/linprobe_random")" \
  "$(last_top1 "$RUN/finetune_random")"
printf 'run directory: %s\n' "$RUN"

# UPerNet segmentation of Fashion-MNIST scenes on the same backbone and at random init (scripts/demo_seg.sh).
bash "$REPO/scripts/demo_seg.sh" "$RUN"
