"""An mpirun program, as an MPI user writes one:

    mpirun -n 4 python tests/mpi/collectives.py
    mpirun -n 4 -x PYCOMM_TRANSPORT=mpi python tests/mpi/collectives.py   # over MPI point-to-point

pycomm communicators made with Communicator.from_mpi from COMM_WORLD, from
Split, Dup and Create_group communicators, side by side in one process: every
collective, dtype and op, and the compressed allreduce, checked against numpy
on every rank (and against MPI's own Allreduce where the sum is exact). Exit
status non-zero on any mismatch (the failing rank aborts the job).
"""
import os
import sys
import traceback

import numpy as np
from mpi4py import MPI

import pycomm

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ranks"))
import collectives as checks  # noqa: E402  (tests/ranks: the same checks pycomm.launch runs)
import compressed as int8_checks  # noqa: E402

TIMEOUT = 120


def check_world(world):
    comm = pycomm.Communicator.from_mpi(world, timeout=TIMEOUT)
    assert (comm.rank, comm.size) == (world.rank, world.size)
    wanted = os.environ.get("PYCOMM_TRANSPORT", "auto")
    assert wanted == "auto" or comm.transport == wanted, (comm.transport, wanted)
    checks.run_all(comm, [0, 1, 7, 1001, 65537])
    for count in (0, 5, 1000, 100003):
        for op in ("sum", "avg"):
            int8_checks.check_allreduce(comm, count, "float32", op, 64)
            int8_checks.check_reduce_scatter(comm, count, "float32", op, 64)
    return comm


def check_against_mpi(mpi_comm, comm):
    # int64 sums are exact: pycomm and MPI must agree to the bit.
    x = np.arange(10007, dtype=np.int64) * (mpi_comm.rank + 1)
    want = np.empty_like(x)
    mpi_comm.Allreduce(x, want, op=MPI.SUM)
    assert np.array_equal(comm.allreduce(x.copy()), want), "pycomm and MPI_Allreduce differ"


def check_split(world, comm):
    color = world.rank % 2
    sub_mpi = world.Split(color, key=world.rank)
    sub = pycomm.Communicator.from_mpi(sub_mpi, timeout=TIMEOUT)
    assert (sub.rank, sub.size) == (sub_mpi.rank, sub_mpi.size)
    for count in (1, 1001, 65537):  # the two communicators interleaved
        checks.check_allreduce(sub, count, "float32", "sum")
        checks.check_allreduce(comm, count, "float64", "max")
        checks.check_broadcast(sub, count, "int32", root=sub.size - 1)
    check_against_mpi(sub_mpi, sub)
    sub.close()
    sub_mpi.Free()


def check_dup_and_group(world):
    dup = pycomm.Communicator.from_mpi(world.Dup(), timeout=TIMEOUT)
    checks.check_allgather(dup, 33, "uint8")
    dup.close()
    if world.size < 3:
        return
    members = list(range(world.size - 1))  # every rank but the last
    group = world.Get_group().Incl(members)
    if world.rank in members:
        part_mpi = world.Create_group(group)
        part = pycomm.Communicator.from_mpi(part_mpi, timeout=TIMEOUT)
        assert part.size == world.size - 1
        checks.check_reduce_scatter(part, 4097, "float32", "avg")
        check_against_mpi(part_mpi, part)
        part.close()
        part_mpi.Free()
    group.Free()
    world.Barrier()


def main():
    world = MPI.COMM_WORLD
    try:
        comm = check_world(world)
        check_split(world, comm)
        check_dup_and_group(world)
        check_against_mpi(world, comm)
        comm.close()
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        world.Abort(1)
    if world.rank == 0:
        print(f"mpi collectives ok on {world.size} ranks over {comm.transport}", flush=True)


if __name__ == "__main__":
    main()
