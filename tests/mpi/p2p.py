"""An mpirun program: pycomm's point-to-point on a communicator made from
COMM_WORLD, over pycomm's own transports or (PYCOMM_TRANSPORT=mpi) over MPI
point-to-point; the same scenarios pycomm.launch runs (tests/ranks/p2p.py).

    mpirun -n 3 python tests/mpi/p2p.py
"""
import os
import sys
import traceback

from mpi4py import MPI

import pycomm

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ranks"))
import p2p as scenarios  # noqa: E402


def main():
    world = MPI.COMM_WORLD
    try:
        comm = pycomm.Communicator.from_mpi(world, timeout=120)
        for scenario in scenarios.SCENARIOS:
            scenario(comm)
        comm.barrier()
        if world.rank == 0:
            print(f"mpi p2p ok on {world.size} ranks over {comm.transport}", flush=True)
        comm.close()
    except BaseException:
        traceback.print_exc()
        sys.stdout.flush()
        world.Abort(1)


if __name__ == "__main__":
    main()
