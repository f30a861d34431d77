#!/usr/bin/env bash
# Builds pycomm with sanitizers in a scratch copy of the tree and runs the
# kernel, transport and collective tests under them (CI runs the
# address+undefined build; `tests/sanitize.sh thread` runs ThreadSanitizer
# over the worker thread and the transports).
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
PYCOMM_SANITIZE="$mode" PYCOMM_CUDA=0 python setup.py -q build_ext --inplace >build.log 2>&1 ||
  { tail -n 40 build.log; exit 1; }
if [[ "$mode" == *thread* ]]; then
  runtime="$(gcc -print-file-name=libtsan.so)"
  export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 report_signal_unsafe=0"
  tests="tests/test_async.py tests/test_collectives.py tests/test_errors.py"
else
  runtime="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)"
  # Python itself is not instrumented and keeps memory until exit: no leak reports.
  export ASAN_OPTIONS="detect_leaks=0 abort_on_error=1"
  export UBSAN_OPTIONS="print_stacktrace=1 halt_on_error=1"
  tests="tests/test_kernels.py tests/test_quantize.py tests/test_collectives.py tests/test_errors.py"
fi
echo "pycomm: running $tests under $mode"
# shellcheck disable=SC2086
LD_PRELOAD="${runtime/:/ }" PYTHONPATH="$work" python -m pytest -q -p no:cacheprovider -x $tests
