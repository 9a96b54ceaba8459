#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine (as root) or re-checks an existing one, then configures and builds.
# Idempotent: a second run installs nothing and only re-runs the (ccached, incremental) build.
#
#   NEPA_VENV     Python environment for LibTorch + test fixtures (default ~/.cache/nepa/venv, outside the checkout;
#                 ~/.cache/nepa/venv-cu12 with NEPA_CUDA=12)
#   NEPA_BUILD    build directory (default <repo>/build; <repo>/build-cu12 with NEPA_CUDA=12)
#   NEPA_CUDA     13 (default): torch 2.11.0, whose wheel is built for CUDA 13.0 (NVIDIA driver >= 580);
#                 12: torch 2.10.0, the last wheel built for CUDA 12.8 (driver >= 525 through CUDA's minor-version
#                 compatibility, >= 570 for the 12.8 driver itself). The code builds against both.
#   Torch_DIR     use your own LibTorch 2.x instead of the torch wheel (the venv then gets numpy/safetensors only,
#                 and the parity tests, which need torch in Python, are not registered)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# NEPA_CUDA=12 keeps its own environment and build tree, so that switching never mixes two LibTorch builds.
SUFFIX=""; [ "${NEPA_CUDA:-13}" = 12 ] && SUFFIX="-cu12"
NEPA_VENV="${NEPA_VENV:-$HOME/.cache/nepa/venv$SUFFIX}"
NEPA_BUILD="${NEPA_BUILD:-$REPO/build$SUFFIX}"
# torch 2.11.0 is the first PyPI wheel built against CUDA 13.0, the toolkit installed here; its LibTorch
# therefore configures with this nvcc and links the same CUDA runtime major. Clusters whose driver predates
# R580 cannot run CUDA 13: NEPA_CUDA=12 takes torch 2.10.0 (CUDA 12.8) instead.
case "${NEPA_CUDA:-13}" in
  13) TORCH_VERSION="2.11.0"; TORCHVISION_VERSION="0.26.0" ;;  # torchvision built against that torch
  12) TORCH_VERSION="2.10.0"; TORCHVISION_VERSION="0.25.0" ;;
  *) echo "[setup] NEPA_CUDA must be 12 or 13, got '${NEPA_CUDA}'" >&2; exit 2 ;;
esac
PILLOW_VERSION="13.0.0"
# Pillow: seg_cli reads the paletted label PNGs with it, scripts/plot_seg_demo.py draws the demo's picture.
# tensorboard: scripts/tb_export.py writes runs' metrics as its event files, and it serves them (README).
# matplotlib: `nepa_sweep report` draws its plots with scripts/plot_sweep.py.
PY_PACKAGES=("numpy==2.4.6" "safetensors==0.8.0" "pillow==$PILLOW_VERSION" "tensorboard==2.21.0"
             "matplotlib==3.11.2")

log() { echo "[setup] $*"; }

# ---- 1. Debian packages ---------------------------------------------------------------------------------
APT_PACKAGES=(build-essential cmake ninja-build ccache pkg-config python3-venv zlib1g-dev
              libopencv-dev libjpeg-dev libpng-dev libgloo-dev libyaml-cpp-dev nlohmann-json3-dev libspdlog-dev libfmt-dev libcli11-dev
              libgtest-dev libgmock-dev libtcmalloc-minimal4
              dataset-fashion-mnist)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  log "Debian packages present"
fi

# ---- 2. Python environment (LibTorch comes from the torch wheel) ----------------------------------------
PY="$NEPA_VENV/bin/python"
if [ ! -x "$PY" ]; then
  log "creating virtual environment $NEPA_VENV"
  mkdir -p "$(dirname "$NEPA_VENV")"
  python3 -m venv "$NEPA_VENV"
fi
want=("${PY_PACKAGES[@]}")
# torchvision: the reference side of the transform fixtures and of bench_data_pipeline (never used by the
# executables).
[ -z "${Torch_DIR:-}" ] && want+=("torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION")
need_pip=0
for spec in "${want[@]}"; do
  name="${spec%%==*}"; version="${spec##*==}"
  have="$("$PY" -c "import importlib.metadata as m; print(m.version('$name'))" 2>/dev/null || true)"
  [ "$have" = "$version" ] || need_pip=1
done
if ((need_pip)); then
  log "installing into $NEPA_VENV: ${want[*]} (torch is ~4 GB with its CUDA libraries; once)"
  "$PY" -m pip install -q --disable-pip-version-check "${want[@]}"
else
  log "Python packages present: ${want[*]}"
fi

# ---- 3. Configure + build -------------------------------------------------------------------------------
CMAKE_ARGS=(-S "$REPO" -B "$NEPA_BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release)
if [ -n "${Torch_DIR:-}" ]; then
  CMAKE_ARGS+=(-DTorch_DIR="$Torch_DIR")
  "$PY" -c "import torch" 2>/dev/null && CMAKE_ARGS+=(-DNEPA_PYTHON="$PY")
else
  CMAKE_ARGS+=(-DNEPA_PYTHON="$PY")
fi
if [ ! -f "$NEPA_BUILD/build.ninja" ]; then
  log "configuring $NEPA_BUILD"
  mkdir -p "$NEPA_BUILD"
  cmake "${CMAKE_ARGS[@]}" > "$NEPA_BUILD/configure.log" 2>&1 || { cat "$NEPA_BUILD/configure.log"; exit 1; }
fi
log "building ($(nproc) jobs)"
cmake --build "$NEPA_BUILD" -j "$(nproc)"
log "done: executables in $NEPA_BUILD/apps"
