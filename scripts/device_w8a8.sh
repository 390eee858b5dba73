#!/usr/bin/env bash
# The W8A8 kernels on the GPU machine of the device tool, in one call: the kernels'
# tests compiled for the GPU, the tile tuning (winners into qbench/triton_configs.json,
# copied to $OUT), then a one-process smoke of every W8A8 path at batch 128.
# Needs the wheels in .whl2/ (snakemake-free is fine; torchao for impl torchao).
set -uo pipefail
# The device copy's .git can be stale: pass the commit measured, e.g.
#   QBENCH_GIT_COMMIT=$(git rev-parse HEAD) in the command (qbench.device.git_commit reads it).
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl2/*.whl >/dev/null 2>&1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TORCHINDUCTOR_CACHE_DIR=$PWD/.qbench-cache/inductor
out=${OUT:-/tmp/out}; mkdir -p "$out"
nvidia-smi --query-gpu=name,uuid,driver_version,clocks.max.sm,power.limit --format=csv | tee "$out/gpu.csv"
python3 -c "import torch, triton, torchao; print('torch', torch.__version__, 'triton', triton.__version__, 'torchao', torchao.__version__)"
timeout 150 python3 -m pytest -q -x tests/test_triton_kernels.py 2>&1 | tail -5
timeout ${TUNE_S:-330} python3 scripts/tune_triton.py --write --json "$out/tune.json" 2>&1 | grep -v "^  skip" | tee "$out/tune.log"
cp qbench/triton_configs.json "$out/" 2>/dev/null
timeout ${BENCH_S:-150} python3 scripts/bench_schemes.py --batch ${BATCH:-128} --iterations 20 --json "$out/schemes.json" \
  --variants ${VARIANTS:-fp16:compile w8a8-int8:triton w8a8-fp8:triton w8a8-int8:compile w8a8-fp8:compile} 2>&1 \
  | grep -E "^batch|Error|error" | tee "$out/schemes.log"
timeout 60 python3 -m pytest -q tests/test_gpu.py -k triton 2>&1 | tail -3
