python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl4/*.whl >/dev/null 2>&1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,uuid,driver_version --format=csv,noheader
san=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1); echo "sanitizer: ${san:-none}"
for v in simple ws1 pingpong; do
  timeout -s KILL 150 python3 scripts/gluon_gemm_probe.py --variant $v --hang-s 30 > $OUT/$v.log 2>&1; rc=$?; echo "== $v rc $rc"
  grep -E "^M=|Error|HANG" $OUT/$v.log
  if [ $rc != 0 ] && [ -n "$san" ]; then
    timeout -s KILL 120 $san --tool memcheck --print-limit 20 python3 scripts/gluon_gemm_probe.py --variant $v --m 1024 --shapes 0 --hang-s 60 > $OUT/$v.sanitizer.log 2>&1
    grep -v "^=========     " $OUT/$v.sanitizer.log | head -30
  fi
done
