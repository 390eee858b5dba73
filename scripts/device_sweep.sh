#!/usr/bin/env bash
# How the committed GPU numbers are made: runs on the GPU machine of this workplace's
# device tool, from the checkout's root, with the Python wheels it lacks carried in .whl/
# (made by ../shared/device/wheels.sh). One call runs at most 10 minutes and the machine
# is given back after 30 s idle, so the work runs in the background and each call waits
# for it (up to $2 seconds) and then reports; state lives in the ignored .qbench-cache/.
#   start N : GPU tests, fidelity benchmark, then N runs of the default sweep, one after
#             the other, each in a fresh results/ (caches are kept: run 1 cold, later warm)
#   wait    : wait, report progress, and copy what is finished into $OUT
set -uo pipefail
# The device copy's .git can be stale: pass the commit measured, e.g.
#   QBENCH_GIT_COMMIT=$(git rev-parse HEAD) in the command (qbench.device.git_commit reads it).
phase=${1:-wait}; budget=${2:-540}
export PYTHONUNBUFFERED=1
state=.qbench-cache/device; mkdir -p "$state"
if [ ! -d /tmp/site/snakemake ]; then
  # compiled on install: why in scripts/device_scaleout.sh
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH
t0=$(date +%s)
if [ "$phase" = start ]; then
  runs=${3:-2}
  cat > "$state/job.sh" <<JOB
set -x
nvidia-smi --query-gpu=name,uuid,driver_version,clocks.max.sm,power.limit --format=csv
python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
python3 -m pytest -q tests/test_gpu.py 2>&1 | tail -15
python3 scripts/bench_fidelity.py --json $state/fidelity.json 2>&1 | grep -v Warning
for r in \$(seq 1 $runs); do
  rm -rf results logs
  s=\$(date +%s.%N)
  python3 -m snakemake --cores 16 --resources gpu=1 --keep-going \${SWEEP_ARGS:-} > $state/sweep-\$r.log 2>&1
  e=\$(date +%s.%N)
  echo "\$s \$e" > $state/wall-\$r.txt
  mkdir -p $state/run\$r && cp -r results logs $state/run\$r/
done
echo ALLDONE
JOB
  setsid nohup bash "$state/job.sh" > "$state/job.log" 2>&1 &
  sleep 2
fi
while ! grep -q ALLDONE "$state/job.log" 2>/dev/null && [ $(( $(date +%s) - t0 )) -lt "$budget" ]; do sleep 5; done
grep -v "^+" "$state/job.log" | tail -40
for f in "$state"/sweep-*.log; do [ -f "$f" ] && echo "$f: $(grep -E 'steps \(' "$f" | tail -1)"; done
cp "$state"/fidelity.json "$state"/job.log "$OUT/" 2>/dev/null
for d in "$state"/run*; do
  [ -d "$d" ] || continue
  n=$(basename "$d"); w=$(cat "$state/wall-${n#run}.txt" 2>/dev/null)
  echo "$n wall: $w"
  tar czf "$OUT/$n.tgz" -C "$d" . "../wall-${n#run}.txt" "../sweep-${n#run}.log" 2>/dev/null
done
true
