#!/usr/bin/env bash
# The GPU checks of issue 16 as one run on a lent GPU machine (see the README, "GPU benchmark"):
# the CUDA-parametrised tests, then benchmarks/gpu.py and benchmarks/graph_builders.py. Results
# land in $OUT (default ./device-out). Expects the wheels of tools/device_wheels.sh in .whl/ and a
# copy of the model directory in .models/ (both carried, both ignored by git):
#   run(command="bash tools/device_check.sh", carry=[".whl", ".models"], timeout_s=570)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-device-out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD GPTFF_MODEL_DIR=$PWD/.models PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
timeout 150 python3 -m pytest -q -p no:cacheprovider -k cuda \
  tests/core/test_graph_torch.py tests/core/test_device_path.py tests/core/test_devices.py \
  tests/core/test_state_graph.py tests/core/test_fused.py tests/core/test_triplets.py 2>&1 | tee "$OUT/cuda_tests.txt"
timeout 60 python3 benchmarks/graph_builders.py --repeats 20 2>&1 | tee "$OUT/graph_builders.jsonl"
timeout 300 python3 benchmarks/gpu.py --device cuda --max-seconds 20 2>&1 | tee "$OUT/gpu.jsonl"
