#!/usr/bin/env bash
# Runs the eight ablation sweeps of configs/sweeps at the CPU budget docs/ablations.md states, one after the other,
# and copies each finished sweep's report (results.md, results.csv, summary.json, plots) to docs/ablations/<sweep>/
# for the repo, then refreshes the tables of docs/ablations.md from them (scripts/ablation_tables.py).
# Resumable: run it again after a stop (kill, reboot, another session) and every sweep continues where it
# stopped; finished stages are not redone. A sweep with a failed stage is reported and the next one starts.
#   bash scripts/run_ablations.sh [sweep names...]     (default: all eight, in the paper's order)
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${NEPA_BUILD:-$REPO/build}/apps"
PYTHON="${NEPA_PYTHON:-${NEPA_VENV:-$HOME/.cache/nepa/venv}/bin/python}"  # the setup venv: the report's plots
cd "$REPO"
[[ -x "$BIN/nepa_sweep" ]] || { echo "run_ablations: $BIN/nepa_sweep not built (bash scripts/setup.sh)" >&2; exit 2; }
SWEEPS=("$@")
((${#SWEEPS[@]})) || SWEEPS=(causal_vs_bidir_fmnist stopgrad_fmnist shift_fmnist masking_fmnist
                            rope_vs_abspos_fmnist layerscale_fmnist qknorm_mlp_fmnist llrd_fmnist)
failed=()
for name in "${SWEEPS[@]}"; do
  file="configs/sweeps/$name.yaml"
  [[ -f "$file" ]] || { echo "run_ablations: no $file" >&2; exit 2; }
  echo "== $(date +%T) $name"
  # Two stage runs at a time: a two-process pretraining takes both, a fine-tuning and a probe share them.
  "$BIN/nepa_sweep" run "$file" --jobs 2
  rc=$?
  ((rc >= 128)) && { echo "run_ablations: stopped by a signal during $name; run again to continue" >&2; exit $rc; }
  ((rc == 0)) || failed+=("$name")
  if "$BIN/nepa_sweep" report "runs/sweeps/$name"; then
    mkdir -p "docs/ablations/$name"
    cp "runs/sweeps/$name"/{results.md,results.csv,summary.json} "runs/sweeps/$name"/*.png "docs/ablations/$name/"
    "$PYTHON" scripts/ablation_tables.py docs/ablations.md || failed+=("$name (tables)")
  else
    failed+=("$name (report)")
  fi
done
((${#failed[@]} == 0)) || { echo "run_ablations: not finished: ${failed[*]}" >&2; exit 1; }
echo "run_ablations: all done; reports in docs/ablations/"
