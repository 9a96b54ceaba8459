#!/usr/bin/env bash
# Pretraining cost of the objectives at the demo's shape (issues 17 §3, 18): the same tiny trunk, images and batch
# (configs/pretrain/fmnist_tiny.yaml, {aim,mae,ijepa}_fmnist_tiny.yaml), 2 data-parallel processes of 64
# images as the demo runs, alternating the four objectives for ROUNDS rounds so that all see the same machine state. Per run: img/s of
# every logged interval after the first two (warm-up, page faults of the first batches), and rank 0's peak RSS.
# Sweeps cannot measure this: `nepa_sweep --jobs 2` runs stages side by side. Run on an otherwise idle machine:
#   bench/objective_cost.sh                      # ROUNDS=3 STEPS=150 OUT=runs/bench/objective_cost
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
STEPS=${STEPS:-150}
OUT=${OUT:-runs/bench/objective_cost}
BIN=${BIN:-build/apps/nepa_pretrain}
((STEPS >= 40)) || { echo "error: STEPS=$STEPS: at least 40 (the first two of the 10-step intervals are warm-up)" >&2; exit 2; }
[[ -x $BIN ]] || { echo "error: $BIN not built (cmake --build build)" >&2; exit 2; }
mkdir -p "$OUT"
for ((r = 1; r <= ROUNDS; r++)); do
  for obj in nepa aim mae ijepa; do
    config=configs/pretrain/fmnist_tiny.yaml
    [[ $obj != nepa ]] && config=configs/pretrain/${obj}_fmnist_tiny.yaml
    dir=$OUT/$obj-$r
    rm -rf "$dir"
    scripts/launch_local.sh 2 "$BIN" --config "$config" --output-dir "$dir" \
      --set train.micro_batch=64 --set schedule.max_steps="$STEPS" --set log.log_every=10 \
      --set eval.knn_k=0 --set eval.knn_at_init=false --set train.checkpoint_every=100000 > "$dir.log" 2>&1 ||
      { echo "error: $obj round $r failed: $dir.log" >&2; exit 1; }
    echo "$obj round $r done"
  done
done
python3 - "$OUT" "$ROUNDS" <<'EOF'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
print("| objective | img/s per round (median of the logged intervals) | mean | peak RSS rank 0 (MB) |")
print("|---|---|---|---|")
means = {}
for obj in ("nepa", "aim", "mae", "ijepa"):
    per_round, rss = [], []
    for r in range(1, rounds + 1):
        recs = [json.loads(l) for l in open(f"{out}/{obj}-{r}/metrics.jsonl")]
        train = [x for x in recs if x.get("kind") == "train"]
        per_round.append(statistics.median(x["img_per_s"] for x in train[2:]))
        rss.append(max(x["peak_rss_mb"] for x in train))
    means[obj] = statistics.mean(per_round)
    print(f"| {obj} | {' / '.join(f'{v:.0f}' for v in per_round)} | {means[obj]:.0f} | {max(rss):.0f} |")
print("\nimg/s relative to NEPA: " + ", ".join(f"{o} {means[o] / means['nepa']:.2f}" for o in ("aim", "mae", "ijepa")))
EOF
