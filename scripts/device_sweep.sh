#!/usr/bin/env bash
# How the committed GPU numbers were made: runs on the GPU machine of this workplace's
# device tool (see README "GPU numbers"), from the checkout's root, with the wheels
# carried in .whl/. Phases, so one sweep can span several calls of at most 10 minutes:
#   start  : install, smoke-test every scheme on one cell, start the sweep in the background
#   wait   : wait (up to $1 s) for the sweep, then collect what exists into $OUT
set -uo pipefail
phase=${1:-start}; budget=${2:-500}
export PYTHONUNBUFFERED=1
if [ ! -d /tmp/site/snakemake ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH
t0=$(date +%s)
if [ "$phase" = start ]; then
  nvidia-smi --query-gpu=name,uuid,driver_version,clocks.max.sm --format=csv
  python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
  python3 scripts/bench_schemes.py --batch 128 --iterations 10 --json results-smoke.json 2>&1 | grep -v Warning
  setsid nohup python3 -m snakemake --cores 16 --resources gpu=1 --keep-going ${SWEEP_ARGS:-} > sweep.log 2>&1 &
  echo "sweep started $(date -u +%FT%TZ)"
fi
while pgrep -f "snakemake --cores" > /dev/null && [ $(( $(date +%s) - t0 )) -lt "$budget" ]; do sleep 5; done
pgrep -f "snakemake --cores" > /dev/null && echo "sweep still running" || echo "sweep finished"
grep -cE "^\[.*\]$|Finished jobid" sweep.log | head -1
grep -E "steps \(|Error|error" sweep.log | tail -5
cp sweep.log results-smoke.json "$OUT/" 2>/dev/null
[ -f results/summary.csv ] && cp results/summary.csv "$OUT/"
tar czf "$OUT/results.tgz" results logs 2>/dev/null
true
