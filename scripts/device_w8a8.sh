#!/usr/bin/env bash
# The W8A8 kernels on the GPU machine of the device tool, in one call: the kernels'
# tests compiled for the GPU, the tile tuning (winners into qbench/triton_configs.json,
# copied to $OUT), then a one-process smoke of every W8A8 path at batch 128.
# With SMOKE=1, first a 4-job run of the workflow (batch 128, 2 repeats) whose logs say
# whether the fork server measured (attempt 1 (fork server)) and what each job cost.
# TUNE_ARGS go to tune_triton.py (e.g. --only-swiglu, --group 128); BATCH may list several sizes;
# VARIANTS are bench_schemes.py's (scheme:impl or scheme:triton:G); TESTS_K narrows the tests (-k).
# STEPS picks what runs (default: tests tune bench gputests; smoke with SMOKE=1; breakdown,
# attention (scripts/bench_attention.py, ATTENTION_ARGS) and gluon (scripts/gluon_gemm_probe.py,
# GLUON_ARGS) on request).
# Needs the wheels in .whl2/ (snakemake for SMOKE; torchao for impl torchao); WHEELS names another
# folder (e.g. one with the torchao wheel alone, when SMOKE is off).
set -uo pipefail
# The device copy's .git can be stale: pass the commit measured, e.g.
#   QBENCH_GIT_COMMIT=$(git rev-parse HEAD) in the command (qbench.device.git_commit reads it).
# compiled on install: why in scripts/device_scaleout.sh
python3 -m pip install -q --no-index --no-deps --target /tmp/site $(for w in ${WHEELS:-.whl2}; do echo $w/*.whl; done) >/dev/null 2>&1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TORCHINDUCTOR_CACHE_DIR=$PWD/.qbench-cache/inductor
out=${OUT:-/tmp/out}; mkdir -p "$out"
nvidia-smi --query-gpu=name,uuid,driver_version,clocks.max.sm,power.limit --format=csv | tee "$out/gpu.csv"
python3 -c "import torch, triton, torchao; print('torch', torch.__version__, 'triton', triton.__version__, 'torchao', torchao.__version__)"
steps=" ${STEPS:-tests tune bench gputests} "; [ "${SMOKE:-0}" = 1 ] && steps="$steps smoke "
has() { [[ "$steps" == *" $1 "* ]]; }
# the whole of both files takes about 330 s on an H100 (2026-11-27): narrow them with TESTS_K, or raise TESTS_S
if has tests; then
  timeout ${TESTS_S:-150} python3 -m pytest -q tests/test_triton_kernels.py tests/test_triton_attention.py ${TESTS_K:+-k "$TESTS_K"} \
    --tb=line > "$out/tests.log" 2>&1; rc=$?
  grep -E "Error|assert|FAILED|passed|failed" "$out/tests.log" | head -30
  [ $rc = 124 ] && echo "tests: cut off after ${TESTS_S:-150} s (TESTS_S), no summary; $out/tests.log has what ran"
fi
if has smoke; then
  rm -rf results logs
  python3 -c "import yaml; c = yaml.safe_load(open('config/config.yaml')); c.update(batch_sizes=[128], repeats=2); yaml.safe_dump(c, open('/tmp/smoke.yaml', 'w'))"
  timeout ${SMOKE_S:-240} python3 -m snakemake results/summary.csv --cores 16 --resources gpu=1 \
    --configfile /tmp/smoke.yaml > "$out/smoke.log" 2>&1; echo "smoke rc $?"
  grep -rh "fork server" logs 2>/dev/null | cut -c 25- | sort | uniq -c | head -10
  tail -n 12 .qbench-cache/fork-server/*.log
  ls .qbench-cache/fork-server/ 2>/dev/null
  python3 -c "
import glob, pandas as pd
for f in sorted(glob.glob('results/shards/**/*.parquet', recursive=True)):
    d = pd.read_parquet(f)
    print(f.split('shards/')[1], *(f'{c}={d[c].iloc[0]:.2f}' for c in ('startup_s', 'setup_s', 'compile_s', 'warmup_s', 'timed_s') if c in d))
"
  tar czf "$out/smoke.tgz" results logs .qbench-cache/fork-server 2>/dev/null
fi
# no candidate starts after 70% of TUNE_S, so that the shapes finished by then are kept
has tune && timeout ${TUNE_S:-330} python3 scripts/tune_triton.py --write --json "$out/tune.json" \
  --budget-s $(( ${TUNE_S:-330} * 7 / 10 )) ${TUNE_ARGS:-} 2>&1 | grep -v "^  skip" | tee "$out/tune.log"
cp qbench/triton_configs.json "$out/" 2>/dev/null
# before bench: with ATTENTION_ARGS=--write, the bench's Triton attention takes the tiles found fastest
has attention && timeout ${ATTENTION_S:-120} python3 scripts/bench_attention.py ${ATTENTION_ARGS:-} 2>&1 \
  | grep -E "^batch|Error|error|NVIDIA|wrote" | tee "$out/attention.log"
cp qbench/attention_configs.json "$out/" 2>/dev/null
has bench && timeout ${BENCH_S:-150} python3 scripts/bench_schemes.py --batch ${BATCH:-128} --iterations 20 --json "$out/schemes.json" \
  --variants ${VARIANTS:-fp16:compile w8a8-int8:triton w8a8-fp8:triton w8a8-int8:compile w8a8-fp8:compile} 2>&1 \
  | grep -E "^batch|Error|error" | tee "$out/schemes.log"
# the Gluon GEMM probe (scripts/device_gluon_bisect.sh runs several variants): killed, not just
# signalled, at its limit, since a wrong barrier phase hangs the GPU kernel
if has gluon; then
  timeout -s KILL ${GLUON_S:-300} python3 scripts/gluon_gemm_probe.py ${GLUON_ARGS:-} > "$out/gluon.full.log" 2>&1
  echo "gluon rc $?"; grep -E "^M=|Error|error|NVIDIA|HANG" "$out/gluon.full.log" | tee "$out/gluon.log"
fi
# BREAKDOWN_ARGS go to bench_breakdown.py (e.g. --batch 1024 --schemes w8a8-fp8 --impls triton --fused-rotary)
has breakdown && timeout ${BREAKDOWN_S:-180} python3 scripts/bench_breakdown.py --configfile config/w8a8.yaml \
  --json "$out/breakdown.json" ${BREAKDOWN_ARGS:-} 2>&1 | grep -v -i "warn" | tee "$out/breakdown.log" | cut -c1-200
has gputests && timeout 60 python3 -m pytest -q tests/test_gpu.py -k triton 2>&1 | tail -3
