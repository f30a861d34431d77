"""Who this rank is, from whichever launcher started it, plus a control-plane store.

The store is a pycomm Store every library's setup can use to exchange a few
bytes (e.g. the port of gloo's own store) without running a collective of
another library: pycomm.launch/torchrun give it through the environment; under
mpirun rank 0 serves a TCPStore whose port it broadcasts with mpi4py.
"""
import itertools
import os
import socket

from pycomm.store import TCPStore, store_from_env

MPI_RANK_VARS = ("OMPI_COMM_WORLD_RANK", "PMI_RANK")


def under_mpirun():
    return any(v in os.environ for v in MPI_RANK_VARS)


class World:
    def __init__(self, rank, size, store, host, timeout, mpi=False):
        self.rank, self.size = rank, size
        self.store = store
        self.host = host        # where rank 0 can be reached, for stores a library starts itself
        self.timeout = timeout
        self.mpi = mpi          # ranks were started by mpirun: the MPI library can run
        self._keys = itertools.count()

    @classmethod
    def detect(cls, timeout):
        if under_mpirun():
            return cls._from_mpi(timeout)
        if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
            rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
            return cls(rank, size, store_from_env(rank, size, timeout),
                       os.environ.get("MASTER_ADDR") or "127.0.0.1", timeout)
        raise SystemExit("pycomm.bench: not started as a rank; pass -n NPROCS, or run under "
                         "python -m pycomm.launch, torchrun or mpirun")

    @classmethod
    def _from_mpi(cls, timeout):
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
        hosts = comm.allgather(socket.gethostname())
        one_host = len(set(hosts)) == 1
        host = "127.0.0.1" if one_host else hosts[0]
        if comm.rank == 0:
            store = TCPStore(host if one_host else "0.0.0.0", 0, True, timeout)
            comm.bcast(store.port, root=0)
        else:
            store = TCPStore(host, comm.bcast(None, root=0), False, timeout)
        return cls(comm.rank, comm.size, store, host, timeout, mpi=True)

    def share(self, value=None):
        """Rank 0's `value` (bytes), on every rank."""
        key = f"bench/share/{next(self._keys)}"
        if self.rank == 0:
            self.store.set(key, value)
            return value
        return self.store.get(key, self.timeout)

    def barrier(self):
        self.store.barrier(f"bench/barrier/{next(self._keys)}", self.rank, self.size, self.timeout)

    def close(self):
        # Rank 0 serves the store, so it closes last, once every other rank has
        # said goodbye: a barrier is not enough, the server could go away before
        # a peer has read the barrier's answer.
        if self.rank == 0:
            for r in range(1, self.size):
                self.store.get(f"bench/bye/{r}", self.timeout)
        else:
            self.store.set(f"bench/bye/{self.rank}", b"")
        self.store.close()
