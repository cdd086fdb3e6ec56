#!/usr/bin/env bash
# One call on a GPU machine: the CUDA tests, then the GPU benchmark (python -m rangerlab.bench
# --device cuda). Runs from the source tree (PYTHONPATH=src) with the machine's own torch and
# triton: nothing is installed. Budget: under 10 minutes on an H100/H200.
#
#   bash scripts/gpu_check.sh            # output also lands in $OUT (or ./gpu-check) as files
set -u
cd "$(dirname "$0")/.."
out="${OUT:-gpu-check}"
mkdir -p "$out"
export PYTHONPATH=src
export RANGERLAB_CACHE="$out/.cache-fused"   # the CPU kernels some tests compare with
unset TRITON_INTERPRET RANGERLAB_TRITON_ON_CPU
python - <<'PY' 2>&1 | tee "$out/versions.txt"
import torch, triton
print("torch", torch.__version__, "cuda", torch.version.cuda, "triton", triton.__version__)
print("gpu", torch.cuda.get_device_name() if torch.cuda.is_available() else "none")
PY
# The compiled kernels (test_triton.py skips where a GPU is present: it is for CPU-only CI).
timeout 300 python -m pytest -q -p no:cacheprovider -o addopts="" tests/test_triton_cuda.py \
    tests/test_triton_stats.py \
    2>&1 | tee "$out/cuda-tests.txt"
tests=${PIPESTATUS[0]}
timeout 240 python -m rangerlab.bench --device cuda --reps 12 2>&1 | tee "$out/bench-cuda.txt"
bench=${PIPESTATUS[0]}
echo "cuda tests exit $tests, benchmark exit $bench" | tee "$out/summary.txt"
[ "$tests" -eq 0 ] && [ "$bench" -eq 0 ]
