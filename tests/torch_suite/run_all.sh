#!/usr/bin/env bash
# Runs all of torch's DistributedTest suite against the backend "pycomm"
# (20+ minutes on a 2-core machine) and prints pytest's summary of every
# test. Extra arguments go to pytest (e.g. -k allreduce, --junitxml=out.xml).
set -euo pipefail
cd "$(dirname "$0")/../.."
export BACKEND=pycomm WORLD_SIZE="${WORLD_SIZE:-2}"
exec python -m pytest -p no:cacheprovider -q -rA tests/torch_suite/conformance.py "$@"
