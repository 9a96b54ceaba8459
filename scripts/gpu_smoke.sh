#!/usr/bin/env bash
# The GPU smoke check, for a machine with NVIDIA GPUs (never run by CI: CI machines have none). Builds if needed,
# then on 2 GPUs when there are two or more (else 1): NEPA-B pretraining, fine-tuning from its export, and
# --eval-only of the result, a few steps each, bf16 autocast, on generated 224x224 images. Prints img/s per run
# (from metrics.jsonl) and the peak GPU memory (nvidia-smi, sampled every 200 ms), and exits non-zero at the
# first failure.
#   bash scripts/gpu_smoke.sh [work dir, default /tmp/nepa_gpu_smoke]
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${1:-/tmp/nepa_gpu_smoke}"
BIN="${NEPA_BUILD:-$REPO/build}/apps"
command -v nvidia-smi >/dev/null || { echo "gpu_smoke: no nvidia-smi: this machine has no NVIDIA GPU" >&2; exit 2; }
GPUS=$(nvidia-smi --query-gpu=index --format=csv,noheader | wc -l)
((GPUS >= 1)) || { echo "gpu_smoke: nvidia-smi lists no GPU" >&2; exit 2; }
N=$((GPUS >= 2 ? 2 : 1))
[[ -x "$BIN/nepa_pretrain" ]] || bash "$REPO/scripts/setup.sh"
rm -rf "$WORK"
mkdir -p "$WORK"
cd "$REPO"

nvidia-smi --query-gpu=index,memory.used --format=csv,noheader,nounits -lms 200 >"$WORK/memory.csv" &
SAMPLER=$!
trap 'kill $SAMPLER 2>/dev/null || true' EXIT

launch() {  # launch NAME ARGS...: one process per GPU through the repo's launcher (torchrun's variables)
  local name=$1; shift
  echo "== $name ($N GPU(s))"
  if ! scripts/launch_local.sh "$N" "$@" >"$WORK/$name.log" 2>&1; then
    tail -30 "$WORK/$name.log"
    echo "gpu_smoke: $name failed (log: $WORK/$name.log)" >&2
    exit 1
  fi
  grep '"kind":"train"' "$WORK/$name/metrics.jsonl" 2>/dev/null | tail -1 |
    sed -n 's/.*"step":\([0-9]*\).*"img_per_s":\([0-9.]*\).*/  last interval: step \1, \2 img\/s/p' || true
}

DATA=(--set data.dataset=synthetic --set data.synthetic_size=1024 --set data.num_workers=4
      --set train.device=cuda --set train.precision=bf16 --set log.log_every=5)
launch pretrain "$BIN/nepa_pretrain" --config configs/pretrain/vitb.yaml --output-dir "$WORK/pretrain" "${DATA[@]}" \
  --set train.total_batch=128 --set train.micro_batch=$((64 / N)) --set schedule.max_steps=30 \
  --set eval.knn_k=10 --set eval.knn_train_samples=256 --set eval.knn_eval_samples=256
launch finetune "$BIN/nepa_finetune" --config configs/finetune/vitb.yaml --output-dir "$WORK/finetune" "${DATA[@]}" \
  --init "$WORK/pretrain/final" --set train.total_batch=128 --set train.micro_batch=$((64 / N)) \
  --set schedule.max_steps=30 --set finetune.num_classes=10 --set finetune.eval_every_epochs=0
echo "== eval-only ($N GPU(s))"
scripts/launch_local.sh "$N" "$BIN/nepa_finetune" --config configs/finetune/vitb.yaml --output-dir "$WORK/eval" \
  "${DATA[@]}" --eval-only --weights "$WORK/finetune/final" >"$WORK/eval.log" 2>&1 ||
  { tail -30 "$WORK/eval.log"; echo "gpu_smoke: eval-only failed" >&2; exit 1; }
grep -o 'top-1 [0-9.]*% top-5 [0-9.]*% on [0-9]* images' "$WORK/eval.log" | head -1 | sed 's/^/  /'

kill $SAMPLER 2>/dev/null || true
wait $SAMPLER 2>/dev/null || true
awk -F', *' '{ if ($2 > peak[$1]) peak[$1] = $2 } END { for (g in peak) printf "  GPU %s peak memory %d MiB\n", g, peak[g] }' \
  "$WORK/memory.csv"
echo "gpu_smoke: OK ($WORK)"
