"""Bootstrap from an MPI communicator: pycomm.Communicator.from_mpi(comm).

Rank and size come from the mpi4py communicator; the few bytes pycomm
exchanges while connecting (host identities, endpoints, the job token) go
through MPI collectives on a duplicate of it, so they never mix with the
program's own MPI traffic. The data path stays pycomm's (shared memory on one
host, TCP across hosts).
"""
from .errors import CommError
from .store import Store

__all__ = ["MPIStore"]


class MPIStore(Store):
    """A Store whose allgather and barrier are MPI collectives.

    Only the collective operations are supported (every rank calls them in
    the same order, as pycomm's bootstrap does); set/get/add/delete raise.
    """

    def __init__(self, comm):
        try:
            self._comm = comm.Dup()
        except AttributeError:
            raise TypeError(f"from_mpi needs an mpi4py communicator, not {type(comm).__name__}") from None
        self.rank = self._comm.Get_rank()
        self.size = self._comm.Get_size()

    def _collective_only(self, what):
        raise CommError(f"MPIStore.{what}: an MPI bootstrap store only runs collectives "
                        "(allgather, barrier)")

    def set(self, key, value):
        self._collective_only("set")

    def get(self, key, timeout):
        self._collective_only("get")

    def add(self, key, amount):
        self._collective_only("add")

    def delete(self, key):
        self._collective_only("delete")

    def allgather(self, prefix, rank, size, data, timeout):
        if (rank, size) != (self.rank, self.size):
            raise ValueError(f"rank {rank} of {size} does not match the MPI communicator "
                             f"(rank {self.rank} of {self.size})")
        return [bytes(b) for b in self._comm.allgather(bytes(data))]

    def barrier(self, prefix, rank, size, timeout):
        self._comm.Barrier()

    def close(self):
        if self._comm is not None:
            comm, self._comm = self._comm, None
            try:
                comm.Free()
            except Exception:  # MPI already finalized at interpreter exit
                pass
