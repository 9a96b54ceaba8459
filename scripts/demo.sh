#!/usr/bin/env bash
# The README's first command: set up the machine, build, and run the main job on the embedded data.
# Until nepa_pretrain lands this is a short real NEPA optimisation of a small ViT on Fashion-MNIST
# (nepa_tool smoke): it prints the test-set NEPA loss before and after, and exports the trained backbone.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$REPO/scripts/setup.sh"
cd "$REPO"
"${NEPA_BUILD:-$REPO/build}/apps/nepa_tool" smoke --config configs/pretrain/fmnist_tiny.yaml "$@"
