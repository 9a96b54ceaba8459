#!/usr/bin/env bash
# The README's first command: set up the machine, build, and pretrain a small NEPA ViT on the embedded
# Fashion-MNIST data (configs/pretrain/fmnist_tiny.yaml), reporting the k-NN top-1 on the test set of the
# backbone at random init and after pretraining. Extra arguments go to nepa_pretrain (e.g. --set ...).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$REPO/scripts/setup.sh"
cd "$REPO"
RUN="runs/fmnist_tiny-$(date +%Y%m%d-%H%M%S)"
"${NEPA_BUILD:-$REPO/build}/apps/nepa_pretrain" --config configs/pretrain/fmnist_tiny.yaml --output-dir "$RUN" "$@"
