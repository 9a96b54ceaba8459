#!/usr/bin/env bash
# The whole test suite: set up / build if needed, then every CTest test (labels: unit, parity, integration).
# Extra arguments go to ctest, e.g. `scripts/test.sh -L unit`. NEPA_CUDA=12 tests the torch 2.10 (CUDA 12.8) tree.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$REPO/scripts/setup.sh"
SUFFIX=""; [ "${NEPA_CUDA:-13}" = 12 ] && SUFFIX="-cu12"  # the tree scripts/setup.sh built
cd "${NEPA_BUILD:-$REPO/build$SUFFIX}"
ctest --output-on-failure -j "$(nproc)" "$@"
