"""Where the time of a small allreduce goes, layer by layer (issue 22).

    python -m pycomm.launch -n 2 bench/latency_breakdown.py [--bytes 8] [--iters 20000]

Each row is the median over 7 rounds of `iters` back-to-back calls (per
call, the slowest rank's), measured in this job's two ranks:

- a call into the native module that does nothing (`_C` property read): the
  price of crossing from Python into C++ at all;
- the native entry (`_C.Communicator.collective`) on a one-rank communicator:
  argument checks, buffer export, the op's submission, the local copy;
- the Python API (`Communicator.allreduce`) on a one-rank communicator:
  the above plus pycomm's Python layer;
- the native entry on all ranks: the above plus the transport (writing to
  the peers, their wake-up and reduce, the return);
- the Python API on all ranks: what a user measures;
- barrier on all ranks: one round of signals with no payload.

This reads the Communicator's native handle (`comm._native`): a benchmark
taking the layers apart, not a layer calling another.
"""
import argparse
import statistics
import tempfile
import time

import numpy as np

import pycomm
from pycomm.operations import ALLREDUCE
from pycomm.ops import op_code


def per_call_us(fn, iters, barrier):
    rounds = []
    for _ in range(7):
        barrier()
        t = time.perf_counter()
        for _ in range(iters):
            fn()
        rounds.append((time.perf_counter() - t) / iters * 1e6)
    return statistics.median(rounds)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bytes", type=int, default=8)
    ap.add_argument("--iters", type=int, default=20000)
    args = ap.parse_args()
    comm = pycomm.Communicator.from_env()
    with tempfile.TemporaryDirectory() as d:
        solo = pycomm.Communicator(0, 1, pycomm.FileStore(d), transport=comm.transport)
    n = max(1, args.bytes // 4)
    x, y = np.ones(n, np.float32), np.empty(n, np.float32)
    sum_ = op_code("sum")
    t = comm.timeout
    native, native1 = comm._native, solo._native
    rows = [
        ("an empty call into _C", lambda: native1.size),
        ("native entry, 1 rank", lambda: native1.collective(ALLREDUCE, x, y, sum_, 0, False, t)),
        ("Python API, 1 rank", lambda: solo.allreduce(x, out=y)),
        (f"native entry, {comm.size} ranks", lambda: native.collective(ALLREDUCE, x, y, sum_, 0, False, t)),
        (f"Python API, {comm.size} ranks", lambda: comm.allreduce(x, out=y)),
        (f"barrier, {comm.size} ranks", lambda: comm.barrier()),
    ]
    results = []
    for name, fn in rows:
        fn()
        mine = per_call_us(fn, args.iters, comm.barrier)
        results.append((name, comm.allreduce(np.array([mine]), op="max")[0]))
    if comm.rank == 0:
        print(f"# allreduce of {args.bytes} B float32 over {comm.transport}, {comm.size} ranks, "
              f"median of 7 x {args.iters} calls, the slowest rank's (us per call)")
        for name, us in results:
            print(f"{name:32s} {us:8.2f}")
        r = dict(results)
        k = comm.size
        print(f"# Python layer {r['Python API, 1 rank'] - r['native entry, 1 rank']:.2f}, "
              f"native entry and local work {r['native entry, 1 rank'] - r['an empty call into _C']:.2f}, "
              f"transport and peers {r[f'native entry, {k} ranks'] - r['native entry, 1 rank']:.2f}")
    solo.close()
    comm.close()


if __name__ == "__main__":
    main()
