#!/usr/bin/env bash
# The GPU check, in one go: devices and toolkit, an in-place build with CUDA,
# the GPU tests, and the kernel bandwidth table (printed last).
#
#   bash bench/gpu_check.sh          # from any folder; log in ${OUT:-/tmp}/gpu_check.log
#
# Exits non-zero when the build or a test fails; the benchmark runs (and its
# table prints) even after a test failure. Each stage has a time limit, so
# the whole run stays under 8 minutes on a 16-core H100 machine (about 4 expected).
set -u -o pipefail
cd "$(dirname "$0")/.."

# GPU test files: the kernels against the CPU's, the build, and the
# collectives on GPU buffers (2 and 4 processes sharing one GPU through IPC).
GPU_TESTS="tests/test_cuda_kernels.py tests/test_cuda_build.py tests/test_cuda_comm.py"

LOG="${OUT:-/tmp}/gpu_check.log"
mkdir -p "$(dirname "$LOG")"
exec > >(tee "$LOG") 2>&1

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYCOMM_BUILD_JOBS="${PYCOMM_BUILD_JOBS:-16}"
status=0
stage() { printf '\n== %s (%s)\n' "$1" "$(date +%T)"; }

stage "devices and toolkit"
nvidia-smi -L || echo "nvidia-smi failed"
nvcc --version 2>/dev/null | tail -n 2 || /usr/local/cuda/bin/nvcc --version | tail -n 2 ||
  echo "nvcc not on PATH"
python3 -c 'import sys, torch
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)'

stage "build (PYCOMM_CUDA=1, $PYCOMM_BUILD_JOBS jobs)"
if ! python3 -c 'import pybind11' 2>/dev/null; then
  # Offline machines: a wheel in a folder named by PIP_FIND_LINKS.
  python3 -m pip install -q --no-index pybind11 2>/dev/null || python3 -m pip install -q pybind11 ||
    { echo "pybind11 is missing and could not be installed"; exit 1; }
fi
build_log="${LOG%.log}.build.log"
start=$SECONDS
if ! PYCOMM_CUDA=1 timeout 180 python3 setup.py -q build_ext --inplace >"$build_log" 2>&1; then
  tail -n 60 "$build_log"
  echo "BUILD FAILED (full log: $build_log)"
  exit 1
fi
grep '^pycomm:' "$build_log"
echo "built in $((SECONDS - start)) s"
python3 -m pycomm.info || status=1

stage "smoke: one allreduce size, 2 ranks on one GPU"
# A hang in the GPU path would otherwise eat every later stage's time limit.
smoke_ok=1
if ! PYCOMM_DEBUG=INFO timeout 60 python3 -m pycomm.launch -n 2 --timeout 50 bench/gpu_allreduce.py 1; then
  echo "SMOKE FAILED: the collectives on GPU buffers are skipped"
  GPU_TESTS="tests/test_cuda_kernels.py tests/test_cuda_build.py"
  smoke_ok=0
  status=1
fi

stage "GPU tests: $GPU_TESTS"
# shellcheck disable=SC2086
timeout 240 python3 -m pytest -q -p no:cacheprovider --maxfail=30 --tb=short --durations=8 $GPU_TESTS || status=1

if [ "$smoke_ok" -eq 1 ]; then
  stage "allreduce of GPU tensors, 2 and 4 ranks on one GPU"
  timeout 60 python3 -m pycomm.launch -n 2 bench/gpu_allreduce.py 1 16 64 256 || status=1
  timeout 60 python3 -m pycomm.launch -n 4 bench/gpu_allreduce.py 64 256 || status=1
fi

stage "kernel bandwidth"
timeout 90 python3 bench/gpu_kernels.py || status=1

if [ "$status" -eq 0 ]; then echo "GPU CHECK PASSED"; else echo "GPU CHECK FAILED"; fi
exit "$status"
