#!/usr/bin/env bash
# Builds pycomm with sanitizers in a scratch copy of the tree and runs the
# kernel, transport, collective and point-to-point tests under them.
# address,undefined: the extension built with ASan+UBSan, the pytest files
# below run with the runtimes preloaded. thread: Python cannot host TSan, so the native test
# tests/native/comm_threads.cpp (ranks as threads, shm and TCP, async ops,
# abort) is built with the core's sources and run. CI runs both.
#
#   tests/sanitize.sh [address,undefined | thread]
set -euo pipefail
mode="${1:-address,undefined}"
src="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d /tmp/pycomm-sanitize.XXXXXX)"
trap 'rm -rf "$work"' EXIT
# The tracked tree only: no build products of the normal build.
git -C "$src" ls-files -z | (cd "$src" && xargs -0 cp --parents -t "$work")
cd "$work"
if [[ "$mode" == *thread* ]]; then
  srcs=$(find csrc/kernels csrc/transport csrc/collectives csrc/comm csrc/p2p csrc/cuda -name '*.cpp' | sort)
  # shellcheck disable=SC2086
  g++ -std=c++17 -O1 -g -fsanitize=thread -Icsrc -o comm_threads tests/native/comm_threads.cpp $srcs \
    -lrt -lpthread
  echo "pycomm: running tests/native/comm_threads.cpp under ThreadSanitizer"
  TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" ./comm_threads
  exit
fi
python -c "import pybind11" 2>/dev/null || { echo "tests/sanitize.sh: needs pybind11 (pip install pybind11)"; exit 1; }
PYCOMM_SANITIZE="$mode" PYCOMM_CUDA=0 PYCOMM_MPI=0 python setup.py -q build_ext --inplace >build.log 2>&1 ||
  { tail -n 40 build.log; exit 1; }
runtime="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
# Python itself is not instrumented and keeps memory until exit: no leak reports.
export ASAN_OPTIONS="detect_leaks=0 abort_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1 halt_on_error=1"
tests="tests/test_kernels.py tests/test_quantize.py tests/test_collectives.py tests/test_errors.py tests/test_p2p.py"
echo "pycomm: running $tests under $mode"
# shellcheck disable=SC2086
LD_PRELOAD="$runtime" PYTHONPATH="$work" python -m pytest -q -p no:cacheprovider -x $tests
