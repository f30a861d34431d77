"""Where the time of a small allreduce goes, layer by layer (issue 22).

    python -m pycomm.launch -n 2 bench/latency_breakdown.py [--bytes 8] [--iters 20000]
    mpirun -n 2 python bench/latency_breakdown.py      # adds mpi4py's Allreduce as a row

Each row is the median over 7 rounds of `iters` back-to-back calls (per
call, the slowest rank's), measured in this job's ranks; the rounds take
the rows in turn, so the VM's drift between minutes falls on every row alike:

- a call into the native module that does nothing (`_C` property read): the
  price of crossing from Python into C++ at all;
- the native entry (`_C.Communicator.collective`) on a one-rank communicator:
  argument checks, buffer export, the op's submission, the local copy;
- the API (`comm.allreduce`) on a one-rank communicator: for numpy buffers
  the native fast path (bindings/fast_allreduce.h), which bypasses the
  entry above (pybind11's dispatcher), so it can cost less than that row;
- the native entry on all ranks: the above plus the transport (writing to
  the peers, their wake-up and reduce, the return);
- the Python API on all ranks: what a user measures;
- barrier on all ranks: one round of signals with no payload;
- under mpirun, mpi4py's `Allreduce(x, y)` on the same arrays (Open MPI's
  shared-memory path with mpi4py's own layer above it).

This reads the Communicator's native handle (`comm._native`): a benchmark
taking the layers apart, not a layer calling another.
"""
import argparse
import os
import statistics
import tempfile
import time

import numpy as np

import pycomm
from pycomm.operations import ALLREDUCE
from pycomm.ops import op_code


def per_call_us(rows, iters, barrier):
    """Each row's median per-call time over 7 rounds, the rows taken in turn."""
    rounds = {name: [] for name, _ in rows}
    for _ in range(7):
        for name, fn in rows:
            barrier()
            t = time.perf_counter()
            for _ in range(iters):
                fn()
            rounds[name].append((time.perf_counter() - t) / iters * 1e6)
    return {name: statistics.median(r) for name, r in rounds.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bytes", type=int, default=8)
    ap.add_argument("--iters", type=int, default=20000)
    args = ap.parse_args()
    mpi = None
    if "OMPI_COMM_WORLD_RANK" in os.environ or "PMI_RANK" in os.environ:
        from mpi4py import MPI
        mpi = MPI.COMM_WORLD
        comm = pycomm.Communicator.from_mpi(mpi)
    else:
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
    if mpi is not None:
        rows.append((f"mpi4py Allreduce, {comm.size} ranks", lambda: mpi.Allreduce(x, y)))
    for _, fn in rows:
        fn()
    mine = per_call_us(rows, args.iters, comm.barrier)
    results = [(name, comm.allreduce(np.array([mine[name]]), op="max")[0]) for name, _ in rows]
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
        if mpi is not None:
            print(f"# pycomm / MPI time: {r[f'Python API, {k} ranks'] / r[f'mpi4py Allreduce, {k} ranks']:.2f}")
    solo.close()
    comm.close()


if __name__ == "__main__":
    main()
