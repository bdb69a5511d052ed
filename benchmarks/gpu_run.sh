#!/usr/bin/env bash
# The one prepared GPU check (run on a lent GPU machine from the repository root):
# GPU tests (marker gpu) and GPU benchmarks; everything goes to $OUT (default ./gpu-out).
# The machine's image has PyTorch but no Ray; pure-Python extras travel as wheels in .whl/.
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader;
  python3 -c "import torch, platform; print('torch', torch.__version__, 'python', platform.python_version())"; } | tee "$OUT/machine.txt"
timeout 150 python3 -m pytest -q -s -m gpu tests/gpu -p no:cacheprovider -o addopts="" 2>&1 | grep -v "^$" | tail -30 | tee "$OUT/gpu_tests.txt"
B="timeout 100 python3 benchmarks/search_step.py --device cuda --no-reference --rounds 1"
$B --shape small --steps 3 2>>"$OUT/bench.err" | grep '"bench"' | tee -a "$OUT/bench.jsonl"
$B --shape small --steps 3 --no-pair 2>>"$OUT/bench.err" | grep '"bench"' | tee -a "$OUT/bench.jsonl"
$B --shape large --steps 2 2>>"$OUT/bench.err" | grep '"bench"' | tee -a "$OUT/bench.jsonl"
for bs in 64 256; do
  timeout 60 python3 benchmarks/attacks.py --device cuda --batch-size $bs 2>>"$OUT/bench.err" | tee -a "$OUT/bench.jsonl"
done
timeout 120 python3 -m benchmarks.scaling --device cuda --steps 2 --amp off ${SCALING_ARGS:-} 2>>"$OUT/bench.err" | tee -a "$OUT/bench.jsonl"
tail -5 "$OUT/bench.err"
