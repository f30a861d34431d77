"""An mpirun program: pycomm's failure scenarios (tests/ranks/errors.py) over
the MPI transport, each on a fresh communicator made with
Communicator.from_mpi(COMM_WORLD, transport="mpi"):

    mpirun -n 2 python tests/mpi/transport_errors.py

Mismatched collectives raise MismatchError naming the rank, a late rank a
TimeoutError naming it, comm.abort() unblocks every rank. Exit status
non-zero on any wrong or missing error (the failing rank aborts the job).
"""
import os
import sys
import traceback

from mpi4py import MPI

import pycomm

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ranks"))
import errors as scenarios  # noqa: E402  (tests/ranks: the same scenarios pycomm.launch runs)

WORLD = MPI.COMM_WORLD


def over_mpi(timeout=20, name=None, **kwargs):
    comm = pycomm.Communicator.from_mpi(WORLD, transport="mpi", timeout=timeout, name=name, **kwargs)
    assert comm.transport == "mpi", comm.transport
    return comm


def main():
    scenarios.comm_from_env = over_mpi  # the scenarios that make fresh communicators
    try:
        for name in ("mismatch", "mismatch_op", "mismatch_kinds", "timeout", "abort", "bad_input"):
            comm = over_mpi(name=name)
            getattr(scenarios, name)(comm)
            comm.close()
            WORLD.Barrier()
            if WORLD.rank == 0:
                print(f"{name} ok", flush=True)
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        WORLD.Abort(1)
    if WORLD.rank == 0:
        print(f"mpi transport errors ok on {WORLD.size} ranks", flush=True)


if __name__ == "__main__":
    main()
