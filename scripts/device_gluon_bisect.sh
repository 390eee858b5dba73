#!/usr/bin/env bash
# The Gluon GEMM probe (scripts/gluon_gemm_probe.py) on the device tool's GPU, each run in
# its own process (a launch failure poisons the CUDA context), killed at its limit (a wrong
# barrier phase hangs the kernel); a failing one is rerun small under compute-sanitizer.
# RUNS: "variant[:block[:stages]]" words, e.g. "simple ws1 pingpong pingpong:64x256x128:4 grouped:192x128x128:4".
# Needs the torchao wheel in .whl4/ (the probe imports qbench, whose triton path does not).
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl4/*.whl >/dev/null 2>&1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
out=${OUT:-/tmp/out}; mkdir -p "$out"
nvidia-smi --query-gpu=name,uuid,driver_version --format=csv,noheader | tee "$out/gpu.csv"
san=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
for run in ${RUNS:-simple ws1 pingpong}; do
  IFS=: read -r v block stages <<< "$run"
  args="--variant $v --block ${block:-128x128x128} --stages ${stages:-5}"
  log="$out/$(echo "$run" | tr ':' '_').log"
  timeout -s KILL ${RUN_S:-150} python3 scripts/gluon_gemm_probe.py $args --hang-s 30 ${PROBE_ARGS:-} > "$log" 2>&1; rc=$?
  echo "== $run rc $rc"; grep -E "^M=|Error|HANG" "$log"
  if [ $rc != 0 ] && [ -n "$san" ]; then
    timeout -s KILL 120 "$san" --tool memcheck --print-limit 20 python3 scripts/gluon_gemm_probe.py $args --m 1024 --shapes 0 \
      --hang-s 60 > "${log%.log}.sanitizer.log" 2>&1
    grep -v "^=========     " "${log%.log}.sanitizer.log" | head -30
  fi
done
