#!/usr/bin/env bash
# Wheels the GPU check (tools/device_check.sh) needs on a machine that has Python 3.12, CUDA
# PyTorch, numpy, scipy, matplotlib, h5py, pytest and tqdm but no package index: downloaded here
# into .whl/ (ignored by git) and carried there. Versions are those of constraints.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
pin() { grep -i "^$1==" constraints.txt | head -1; }
PACKAGES=(ase vesin vesin-torch torch-sim-atomistic tables numexpr blosc2 ndindex platformdirs)
SPECS=()
for name in "${PACKAGES[@]}"; do SPECS+=("$(pin "$name" || echo "$name")"); done
PLATFORMS=()
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014 manylinux1; do
  PLATFORMS+=(--platform "${tag}_x86_64")
done
mkdir -p .whl
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp "${PLATFORMS[@]}" -d .whl "${SPECS[@]}"
du -sh .whl
