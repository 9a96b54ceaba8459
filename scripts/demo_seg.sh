#!/usr/bin/env bash
# The segmentation part of the main job (scripts/demo.sh runs it after fine-tuning): scenes of Fashion-MNIST items
# in the ADE20K layout (nepa_tool make-scenes, seed 0: 4,000 training / 500 validation scenes of 56 x 56 px), then
# UPerNet (configs/seg/fmnist_scenes.yaml) on the pretraining run's backbone and on the same backbone at random
# init under the same budget, 2 data-parallel processes (SyncBN over both); prints mIoU / mAcc / aAcc of both and
# draws a few validation scenes with both models' predictions (<run>/seg_demo.png).
#   scripts/demo_seg.sh runs/fmnist_tiny-<date> [nepa_seg options, e.g. --set schedule.max_steps=300]
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
SUFFIX=""; [ "${NEPA_CUDA:-13}" = 12 ] && SUFFIX="-cu12"  # as scripts/setup.sh
BIN="${NEPA_BUILD:-$REPO/build$SUFFIX}/apps"
PY="${NEPA_VENV:-$HOME/.cache/nepa/venv$SUFFIX}/bin/python"
RUN="${1:?usage: scripts/demo_seg.sh <pretraining run directory> [nepa_seg options]}"; shift
[ -f "$RUN/final/model.safetensors" ] || { echo "demo_seg.sh: $RUN/final/model.safetensors not found" >&2; exit 2; }
SCENES=runs/fmnist_scenes
"$BIN/nepa_tool" make-scenes --out "$SCENES" --seed 0   # once; later runs find the same set and keep it
CFG=configs/seg/fmnist_scenes.yaml
shown=()
for i in 0 1 2 3 4 5; do shown+=("$SCENES/images/validation/scene_00000$i.jpg"); done
for init in nepa random; do
  from=()
  [[ $init == nepa ]] && from=(--init "$RUN/final")
  scripts/launch_local.sh 2 "$BIN/nepa_seg" --config "$CFG" --set data.root="$SCENES" --output-dir "$RUN/seg_$init" \
    --set train.micro_batch=8 "${from[@]}" "$@"
  "$BIN/nepa_seg" --config "$CFG" --set data.root="$SCENES" --output-dir "$RUN/seg_$init" \
    --predict "${shown[@]}" --weights "$RUN/seg_$init/final" --out "$RUN/seg_$init/predictions"
done
"$PY" scripts/plot_seg_demo.py "$SCENES" "$RUN/seg_nepa/predictions" "$RUN/seg_random/predictions" "$RUN/seg_demo.png"

last_eval() { grep '"kind":"eval"' "$1/metrics.jsonl" | tail -1 | sed "s/.*\"$2\":\([0-9.]*\).*/\1/"; }
printf '\nUPerNet on the 500 validation scenes (11 classes: background + 10 items; sliding-window evaluation);\n'
printf 'both backbones get the same recipe and budget (configs/seg/fmnist_scenes.yaml):\n'
printf '                             mIoU      mAcc      aAcc\n'
for init in nepa random; do
  label="NEPA-pretrained backbone"; [[ $init == random ]] && label="random-init backbone    "
  printf '  %s   %6.2f    %6.2f    %6.2f\n' "$label" "$(last_eval "$RUN/seg_$init" mIoU)" \
    "$(last_eval "$RUN/seg_$init" mAcc)" "$(last_eval "$RUN/seg_$init" aAcc)"
done
printf 'per-class tables: %s/seg_{nepa,random}/seg_per_class.md; predictions: %s/seg_demo.png\n' "$RUN" "$RUN"
