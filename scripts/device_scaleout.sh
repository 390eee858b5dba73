#!/usr/bin/env bash
# The scale-out proof and the W8A8 study on the device tool's 2-GPU machine
# (nvidia-h100-x2), in the background across back-to-back calls (a call runs at most
# 10 minutes; the machine is given back after 30 s idle). State lives in the ignored
# .qbench-cache/scaleout/; each call waits up to $2 seconds and copies what is finished
# into $OUT.
#   start : warm the compile caches for every default cell (one repeat, both GPUs), then
#           the default sweep with gpu=1, the same with gpu=2 (both warm, same machine),
#           then the W8A8 study (config/w8a8.yaml, 2 repeats) with gpu=2 (STUDY_GPUS);
#           RUNS picks and orders them (default: pretest warm gpu1 gpu2 study); pretest
#           runs the two-GPU tests first (a job on GPU 1 sees it alone, as cuda:0) and
#           stops everything if they fail; before is the default sweep with the timing of
#           commit d2557f6 (warm-up >= 10 forwards and 25 ms, max_time_s 4), with gpu=1;
#           firstcall runs scripts/bench_first_call.py; lanes is a 16-job two-GPU check
#           of qbench.lanes (gpu=2), which prints each job's GPU and lane; norblock is a
#           warm run and the default sweep (gpu=1) with TORCHINDUCTOR_DYNAMIC_SCALE_RBLOCK=0;
#           base is the default sweep (gpu=1) as of commit 413120f (an A/B beside gpu1):
#           no run bytecode cache (QBENCH_BYTECODE_CACHE=0), 3 profiled forwards in the
#           breakdown (session 6's base, as of 7cd73b0, is in that commit's copy);
#           gpu1b is gpu1 again; spread is fp16 at batch 128 in 10 repeats, each profiled
#           (3 forwards), to compare the processes' kernels; PRETEST_K picks pretest's tests; STUDY_DTYPES and
#           STUDY_REPEATS narrow the study
#   wait  : wait, report progress, copy results
# Needs .whl2/ (snakemake, torchao; WHEELS=.whl3 names a slimmer copy without torchao and pulp's CBC binaries,
# WHEELS=".whl3 .whl4" adds torchao's wheel to it; no vl-convert: charts and report are drawn off-GPU
# from the copied results).
set -uo pipefail
# The device copy's .git can be stale: pass the commit measured, e.g.
#   QBENCH_GIT_COMMIT=$(git rev-parse HEAD) in the command (qbench.device.git_commit reads it).
phase=${1:-wait}; budget=${2:-540}
export PYTHONUNBUFFERED=1
state=.qbench-cache/scaleout; mkdir -p "$state"
if [ ! -d /tmp/site/snakemake ]; then
  # Compiled on install (no --no-compile), as a user's pip leaves them: the machine sets
  # PYTHONDONTWRITEBYTECODE=1, so wheels without .pyc are compiled again by every process
  # that imports them, Snakemake's own start included (docs/PERFORMANCE.md, eighth session).
  python3 -m pip install -q --no-index --no-deps --target /tmp/site $(for w in ${WHEELS:-.whl2}; do echo $w/*.whl; done) >/dev/null 2>&1 || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH
t0=$(date +%s)
if [ "$phase" = start ]; then
  cat > "$state/job.sh" <<'JOB'
state=.qbench-cache/scaleout
nvidia-smi --query-gpu=index,name,uuid,driver_version,clocks.max.sm,power.limit --format=csv
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
targets="results/summary.csv results/breakdown.csv"
python3 - <<'PY'
import yaml
c = yaml.safe_load(open("config/config.yaml")); c["repeats"] = 1
yaml.safe_dump(c, open(".qbench-cache/scaleout/warm.yaml", "w"))
# STUDY_DTYPES (names of config/w8a8.yaml's dtypes, space-separated) narrows the study to
# what fits the device time left, e.g. "fp16 fp8-triton fp8-torchao"; STUDY_REPEATS sets its repeats
import os
s = yaml.safe_load(open("config/w8a8.yaml")); s["repeats"] = int(os.environ.get("STUDY_REPEATS", 2))
keep = os.environ.get("STUDY_DTYPES", "").split()
if keep:
    s["dtypes"] = {k: v for k, v in s["dtypes"].items() if k in keep}
yaml.safe_dump(s, open(".qbench-cache/scaleout/w8a8.yaml", "w"))
# the default sweep with the timing defaults before 2026-11-26's fourth session (warm-up
# >= 10 forwards and 25 ms, max_time_s 4): run beside gpu1 on the same card, an A/B
c = yaml.safe_load(open("config/config.yaml")); c["timing"].update(warmup=10, warmup_ms=25, max_time_s=4)
yaml.safe_dump(c, open(".qbench-cache/scaleout/before.yaml", "w"))
# the default sweep as of commit 413120f (with QBENCH_BYTECODE_CACHE=0): an A/B beside gpu1
c = yaml.safe_load(open("config/config.yaml")); c["breakdown"]["forwards"] = 3
yaml.safe_dump(c, open(".qbench-cache/scaleout/base.yaml", "w"))
# a short two-GPU check of the lanes (qbench.lanes): 16 jobs, 2 batch sizes, 4 repeats
c = yaml.safe_load(open("config/config.yaml")); c.update(batch_sizes=[128, 256], repeats=4)
c["timing"].update(max_time_s=2)
yaml.safe_dump(c, open(".qbench-cache/scaleout/lanes.yaml", "w"))
# where fp16 batch 128's repeats differ (0.6% between processes on some cards): 10 repeats,
# each with 3 profiled forwards, so each process's kernels and their times can be compared
c = yaml.safe_load(open("config/config.yaml"))
c.update(batch_sizes=[128], repeats=10, dtypes={k: v for k, v in c["dtypes"].items() if k == c["baseline"]})
c["breakdown"].update(repeats=10, forwards=3)
yaml.safe_dump(c, open(".qbench-cache/scaleout/spread.yaml", "w"))
PY
run() {  # name gpus configfile
  rm -rf results logs
  s=$(date +%s.%N)
  python3 -m snakemake $targets --cores 16 --resources gpu=$2 --keep-going --configfile $3 > $state/$1.log 2>&1
  e=$(date +%s.%N)
  echo "$s $e" > $state/wall-$1.txt
  mkdir -p $state/$1 && cp -r results logs $state/$1/
  cp .qbench-cache/fork-server/*.log $state/$1/logs/ 2>/dev/null  # the servers' start-up and exit reasons
  echo "DONE $1 $(python3 -c "print(round($e - $s, 1))") s"
}
for r in ${RUNS:-pretest warm gpu1 gpu2 study}; do
  case $r in
    pretest)
      python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py -k "${PRETEST_K:-second_gpu or another_gpu or graph_replay}" > $state/pretest.log 2>&1
      rc=$?; tail -3 $state/pretest.log; echo "DONE pretest rc=$rc"
      [ $rc = 0 ] || break ;;
    warm) run warm 2 $state/warm.yaml ;;
    gpu1) run gpu1 1 config/config.yaml ;;
    gpu1b) run gpu1b 1 config/config.yaml ;;  # the same again: the stability pair, and a second overhead number
    gpu2) run gpu2 2 config/config.yaml ;;
    before) run before 1 $state/before.yaml ;;
    base) ( export QBENCH_BYTECODE_CACHE=0; run base 1 $state/base.yaml ) ;;
    norblock)  # A/B: Inductor without _dynamic_scale_rblock (pytorch#189121: re-benchmarked in every process)
      ( export TORCHINDUCTOR_DYNAMIC_SCALE_RBLOCK=0; run norblock-warm 2 $state/warm.yaml; run norblock 1 config/config.yaml ) ;;
    lanes)
      run lanes 2 $state/lanes.yaml
      grep -h "GPU .* visible\|left its lane" $state/lanes/logs/measure/*/*/*/*.log | sed 's/^.*qbench.measure: //' | sort | uniq -c
      grep -h "precomputed\|cannot serve\|refusing" .qbench-cache/fork-server/*.log | head -5 ;;
    firstcall)  # where a job's first compiled call goes, and a fork-server pre-warm (scripts/bench_first_call.py)
      timeout 300 python3 scripts/bench_first_call.py --scheme w8a8-int8 --batch 128 --rounds 2 --profile --variants child,optional,norblock \
        --json $state/firstcall.jsonl > $state/firstcall.log 2>&1; echo "DONE firstcall rc=$?" ;;
    spread) run spread 1 $state/spread.yaml ;;
    study) run study ${STUDY_GPUS:-2} $state/w8a8.yaml ;;
  esac
done
echo ALLDONE
JOB
  setsid nohup bash "$state/job.sh" > "$state/job.log" 2>&1 &
  sleep 2
fi
while ! grep -q ALLDONE "$state/job.log" 2>/dev/null && [ $(( $(date +%s) - t0 )) -lt "$budget" ]; do sleep 5; done
tail -25 "$state/job.log"
for f in "$state"/*.log; do [ -f "$f" ] && echo "$(basename $f): $(grep -E 'steps \(' "$f" | tail -1)"; done
ls results/shards/*/ 2>/dev/null | head -3
for d in "$state"/warm "$state"/gpu1 "$state"/gpu1b "$state"/gpu2 "$state"/before "$state"/base "$state"/lanes "$state"/norblock "$state"/spread "$state"/study; do
  [ -d "$d" ] || continue
  n=$(basename "$d")
  tar czf "$OUT/$n.tgz" -C "$state" "$n" "wall-$n.txt" "$n.log" 2>/dev/null
done
# a run still going: its finished shards so far
[ -d results/shards ] && tar czf "$OUT/partial.tgz" results logs 2>/dev/null
cp "$state/job.log" "$state/pretest.log" "$state/firstcall.log" "$state/firstcall.jsonl" "$OUT/" 2>/dev/null
true
