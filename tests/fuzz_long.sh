#!/usr/bin/env bash
# The long fuzz: 10,000 seeded random ops on 2 to 5 ranks over shared memory,
# 2,000 over TCP, then a soak of SOAK_SECONDS (default 600) reporting ops/s
# and resident memory. Exit status non-zero on the first wrong result.
set -euo pipefail
cd "$(dirname "$0")"
for n in 2 3 4 5; do
  python -m pycomm.launch -n "$n" ranks/fuzz.py --ops 10000 --seed "$n"
  TEST_TRANSPORT=tcp python -m pycomm.launch -n "$n" ranks/fuzz.py --ops 2000 --seed "$((n + 10))"
done
python -m pycomm.launch -n 3 ranks/fuzz.py --seconds "${SOAK_SECONDS:-600}"
