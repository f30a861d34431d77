"""An mpirun program: pycomm's failure scenarios (tests/ranks/errors.py) over
the MPI transport, each on a fresh communicator made with
Communicator.from_mpi(COMM_WORLD, transport="mpi"):

    mpirun -n 2 python tests/mpi/transport_errors.py      # (-n 3: all but timeout and abort)

Mismatched collectives raise MismatchError naming the rank, a late rank a
TimeoutError naming it, comm.abort() unblocks every rank. Two of the MPI
transport's own: a mismatch while payloads are in flight on its payload
channel (and a fresh communicator working after it), and ranks that set its
knobs differently. Exit status non-zero on any wrong or missing error (the
failing rank aborts the job).
"""
import os
import sys
import traceback

from mpi4py import MPI

import numpy as np

import pycomm

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ranks"))
import errors as scenarios  # noqa: E402  (tests/ranks: the same scenarios pycomm.launch runs)

WORLD = MPI.COMM_WORLD


def over_mpi(timeout=20, name=None, **kwargs):
    comm = pycomm.Communicator.from_mpi(WORLD, transport="mpi", timeout=timeout, name=name, **kwargs)
    assert comm.transport == "mpi", comm.transport
    return comm


def mismatch_on_the_channel(comm):
    # 4 MiB payloads, one rank's a little longer: the frames disagree while
    # the payload messages behind them are already sent.
    count = (1 << 20) + (256 if comm.rank == 1 else 0)
    scenarios.expect(pycomm.MismatchError, lambda: comm.allreduce(np.ones(count, np.float32)), "rank 1")
    comm.close()
    fresh = over_mpi(name="after the mismatch")
    x = np.full(1 << 20, comm.rank + 1, np.float32)
    assert np.array_equal(fresh.allreduce(x), np.full(1 << 20, comm.size * (comm.size + 1) / 2, np.float32))
    fresh.close()


def knobs_differ(comm):
    os.environ["PYCOMM_MPI_CHUNK_BYTES"] = str(65536 << comm.rank)
    try:
        scenarios.expect(ValueError, over_mpi, "PYCOMM_MPI_CHUNK_BYTES differently")
    finally:
        del os.environ["PYCOMM_MPI_CHUNK_BYTES"]


def main():
    scenarios.comm_from_env = over_mpi  # the scenarios that make fresh communicators
    here = {"mismatch_on_the_channel": mismatch_on_the_channel, "knobs_differ": knobs_differ}
    try:
        two_ranks = ("timeout", "abort") if WORLD.size == 2 else ()  # their expectations are for 2 ranks
        for name in ("mismatch", "mismatch_op", "mismatch_kinds") + two_ranks + (
                "bad_input", "mismatch_on_the_channel", "knobs_differ"):
            comm = over_mpi(name=name)
            (here.get(name) or getattr(scenarios, name))(comm)
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
