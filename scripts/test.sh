#!/usr/bin/env bash
# The whole test suite: set up / build if needed, then every CTest test (labels: unit, parity, integration).
# Extra arguments go to ctest, e.g. `scripts/test.sh -L unit`.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$REPO/scripts/setup.sh"
cd "${NEPA_BUILD:-$REPO/build}"
ctest --output-on-failure -j "$(nproc)" "$@"
