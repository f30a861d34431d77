"""The libraries the benchmark runs, behind one small interface.

    backend.unsupported(op, dtype, redop) -> reason or None
    backend.setup(); backend.run(op, sendbuf, recvbuf, redop); backend.teardown()

Buffers are numpy arrays (bfloat16 as its uint16 bits) turned into what the
library takes by `wrap`, once per size. allreduce, reduce and broadcast run
in place on recvbuf (torch.distributed has no other form; the runner restores
recvbuf before each call); the others go from sendbuf to recvbuf. Rooted ops
use root 0.
"""
import importlib.util
import itertools
from datetime import timedelta

import numpy as np

OPS = ("allreduce", "reduce_scatter", "allgather", "broadcast", "reduce", "gather", "scatter", "alltoall",
       "sendrecv")


def partner(rank, size):
    """sendrecv's ping-pong pairs: 0-1, 2-3, ...; the last of an odd number idles (None)."""
    p = rank ^ 1
    return p if p < size else None
IN_PLACE = ("allreduce", "reduce", "broadcast")  # on recvbuf


def _torch_tensor(array, dtype):
    import torch

    t = torch.from_numpy(array)
    return t.view(torch.bfloat16) if dtype == "bfloat16" else t


_SETUPS = itertools.count()  # every rank sets up the same backends in the same order


class Backend:
    name = "?"
    transport = "?"   # what carries the bytes, as far as we know
    version = "?"

    def __init__(self, world, transport=None):
        self.world = world
        self.rank, self.size = world.rank, world.size

    def unsupported(self, op, dtype, redop):
        return None

    def setup(self):
        pass

    def teardown(self):
        pass

    def wrap(self, array, dtype):
        return array

    def run(self, op, sendbuf, recvbuf, redop):
        raise NotImplementedError

    def barrier(self):
        raise NotImplementedError

    def ping_pong(self, send, recv):
        """sendrecv: partners (0-1, 2-3, ...) exchange one message each way,
        even ranks sending first; the last of an odd number idles."""
        p = partner(self.rank, self.size)
        if p is not None:
            first, second = (send, recv) if self.rank % 2 == 0 else (recv, send)
            first(p)
            second(p)

    def allreduce_array(self, values, redop):
        """A copy of the small float64/int64 array `values` reduced over ranks (bookkeeping:
        timings, error counts, hashes), through this library's own allreduce."""
        out = np.array(values)
        self.run("allreduce", None, self.wrap(out, str(out.dtype)), redop)
        return out


class PycommBackend(Backend):
    name = "pycomm"

    compress = {}  # keyword arguments of the compressed collectives
    lossy = False

    def __init__(self, world, transport=None):
        super().__init__(world)
        self.requested_transport = transport

    def unsupported(self, op, dtype, redop):
        if dtype == "bfloat16" and importlib.util.find_spec("torch") is None:
            return "bfloat16 buffers need torch (pycomm takes them via DLPack)"
        return None

    def setup(self):
        import pycomm

        # Each setup its own name: the store still holds the keys of the last one (--rounds).
        name = f"bench-{self.name}-{next(_SETUPS)}"
        if self.requested_transport == "mpi":  # over MPI point-to-point: needs the MPI communicator
            if not self.world.mpi:
                raise SystemExit("pycomm.bench: --transport mpi needs the ranks started by mpirun")
            from mpi4py import MPI

            self.comm = pycomm.Communicator.from_mpi(MPI.COMM_WORLD, transport="mpi", name=name)
        else:
            self.comm = pycomm.Communicator(self.rank, self.size, self.world.store,
                                            transport=self.requested_transport, name=name)
        self.transport = self.comm.transport
        self.version = pycomm.__version__

    def wrap(self, array, dtype):
        return _torch_tensor(array, dtype) if dtype == "bfloat16" else array

    def run(self, op, sendbuf, recvbuf, redop):
        c = self.comm
        if op == "allreduce":
            c.allreduce(recvbuf, op=redop, **self.compress)
        elif op == "reduce_scatter":
            c.reduce_scatter(sendbuf, op=redop, out=recvbuf, **self.compress)
        elif op == "allgather":
            c.allgather(sendbuf, out=recvbuf, **self.compress)
        elif op == "broadcast":
            c.broadcast(recvbuf, root=0)
        elif op == "reduce":
            c.reduce(recvbuf, root=0, op=redop)
        elif op == "gather":
            c.gather(sendbuf, root=0, out=recvbuf)
        elif op == "scatter":
            c.scatter(sendbuf, root=0, out=recvbuf)
        elif op == "sendrecv":
            self.ping_pong(lambda p: c.send(sendbuf, p), lambda p: c.recv(recvbuf, p))
        else:
            c.alltoall(sendbuf, out=recvbuf)

    def barrier(self):
        self.comm.barrier()

    def teardown(self):
        self.comm.close()


class PycommInt8Backend(PycommBackend):
    """pycomm's compressed collectives: int8 on the wire, float32 in and out."""
    OPS = ("allreduce", "reduce_scatter", "allgather")
    name = "pycomm-int8"
    lossy = True

    def __init__(self, world, transport=None, block_size=64):
        super().__init__(world, transport)
        self.compress = {"compress": "int8", "block_size": block_size}

    def unsupported(self, op, dtype, redop):
        if op not in self.OPS:
            return f"no compressed {op}"
        if dtype != "float32" or redop not in ("sum", "avg", "none"):
            return "compression is measured on float32 (sum/avg)"
        return None

    def allreduce_array(self, values, redop):
        # Bookkeeping must be exact: the plain allreduce.
        out = np.array(values)
        self.comm.allreduce(out, op=redop)
        return out


class MpiBackend(Backend):
    """Open MPI (or whatever mpi4py was built with) on numpy buffers."""
    name = "mpi"

    def unsupported(self, op, dtype, redop):
        if importlib.util.find_spec("mpi4py") is None:
            return "mpi4py is not installed"
        if not self.world.mpi:
            return "the ranks were not started by mpirun"
        if dtype == "bfloat16":
            return "MPI has no bfloat16 type"
        if redop == "avg":
            return "MPI has no average reduction"
        return None

    def setup(self):
        from mpi4py import MPI

        self.MPI = MPI
        self.comm = MPI.COMM_WORLD.Dup()
        self.ops = {"sum": MPI.SUM, "prod": MPI.PROD, "min": MPI.MIN, "max": MPI.MAX}
        self.transport = "its own transports"  # Open MPI picks shared memory on one host itself
        self.version = MPI.Get_library_version().split(",")[0].strip()

    def run(self, op, sendbuf, recvbuf, redop):
        c, root = self.comm, self.rank == 0
        if op == "allreduce":
            c.Allreduce(self.MPI.IN_PLACE, recvbuf, op=self.ops[redop])
        elif op == "reduce_scatter":
            c.Reduce_scatter_block(sendbuf, recvbuf, op=self.ops[redop])
        elif op == "allgather":
            c.Allgather(sendbuf, recvbuf)
        elif op == "broadcast":
            c.Bcast(recvbuf, root=0)
        elif op == "reduce":
            c.Reduce(self.MPI.IN_PLACE if root else recvbuf, recvbuf if root else None, op=self.ops[redop], root=0)
        elif op == "gather":
            c.Gather(sendbuf, recvbuf if root else None, root=0)
        elif op == "scatter":
            c.Scatter(sendbuf if root else None, recvbuf, root=0)
        elif op == "sendrecv":
            self.ping_pong(lambda p: c.Send(sendbuf, p), lambda p: c.Recv(recvbuf, p))
        else:
            c.Alltoall(sendbuf, recvbuf)

    def barrier(self):
        self.comm.Barrier()

    def teardown(self):
        self.comm.Free()


class GlooBackend(Backend):
    """torch.distributed's gloo backend, on tensors sharing the numpy buffers' memory."""
    name = "gloo"
    dist_backend = "gloo"

    def unsupported(self, op, dtype, redop):
        if importlib.util.find_spec("torch") is None:
            return "torch is not installed"
        return None

    def setup(self):
        import torch
        import torch.distributed as dist

        self.dist = dist
        w = self.world
        timeout = timedelta(seconds=w.timeout)
        # A store of its own on a fresh port: MASTER_PORT belongs to pycomm's store.
        if w.rank == 0:
            self.store = dist.TCPStore(w.host, 0, w.size, True, timeout, wait_for_workers=False)
            w.share(str(self.store.port).encode())
        else:
            self.store = dist.TCPStore(w.host, int(w.share()), w.size, False, timeout)
        dist.init_process_group(self.dist_backend, store=self.store, rank=w.rank, world_size=w.size,
                                timeout=timeout)
        R = dist.ReduceOp
        self.ops = {"sum": R.SUM, "prod": R.PRODUCT, "min": R.MIN, "max": R.MAX, "avg": R.AVG}
        # torch 2.13 renamed the tensor forms (the old names warn); older torch has only those.
        self.reduce_scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
        self.allgather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
        self.transport = "tcp"  # gloo has no shared-memory transport
        self.version = f"torch {torch.__version__}"

    def wrap(self, array, dtype):
        return _torch_tensor(array, dtype)

    def run(self, op, sendbuf, recvbuf, redop):
        d, root = self.dist, self.rank == 0
        if op == "allreduce":
            d.all_reduce(recvbuf, op=self.ops[redop])
        elif op == "reduce_scatter":
            self.reduce_scatter(recvbuf, sendbuf, op=self.ops[redop])
        elif op == "allgather":
            self.allgather(recvbuf, sendbuf)
        elif op == "broadcast":
            d.broadcast(recvbuf, src=0)
        elif op == "reduce":
            d.reduce(recvbuf, dst=0, op=self.ops[redop])
        elif op == "gather":
            d.gather(sendbuf, gather_list=self._blocks(recvbuf) if root else None, dst=0)
        elif op == "scatter":
            d.scatter(recvbuf, scatter_list=self._blocks(sendbuf) if root else None, src=0)
        elif op == "sendrecv":
            self.ping_pong(lambda p: d.send(sendbuf, p), lambda p: d.recv(recvbuf, p))
        else:
            d.all_to_all_single(recvbuf, sendbuf)

    def _blocks(self, t):
        """t as a list of size views (gather/scatter lists), made once per buffer."""
        key = (t.data_ptr(), t.numel())
        if getattr(self, "_blocks_of", (None,))[0] != key:
            self._blocks_of = (key, list(t.chunk(self.size)))
        return self._blocks_of[1]

    def barrier(self):
        self.dist.barrier()

    def teardown(self):
        self.dist.destroy_process_group()
        self.world.barrier()  # rank 0's store serves the others until all have left the group
        del self.store


class TorchPycommBackend(GlooBackend):
    """pycomm through torch.distributed (the backend "pycomm"): what a torch user gets."""
    name = "torch-pycomm"
    dist_backend = "pycomm"

    def setup(self):
        import pycomm.torch  # noqa: F401  registers the backend

        super().setup()
        self.transport = self.dist.group.WORLD.comm.transport


BACKENDS = {b.name: b for b in (PycommBackend, PycommInt8Backend, MpiBackend, GlooBackend,
                                TorchPycommBackend)}
LIBRARIES = tuple(BACKENDS)
