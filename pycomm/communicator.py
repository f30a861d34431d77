"""The Communicator: pycomm's Python face over the native core.

Rank, size and rendezvous come from whoever launched the job (a Store);
the data path is native (shared memory on one host, TCP across hosts) and
Python never touches payload bytes.
"""
import itertools
import os
import secrets
import weakref
from collections import deque

import numpy as np

from . import _C
from . import device, environment, hierarchy, int8_args, log, shrink
from .group import Group
from .operations import ALLREDUCE, OPERATIONS, ROWS, elems, per_rank, present
from .ops import op_code
from .store import Store
from .topology import bind_address, choose_transport, host_id

_comm_ids = itertools.count()


def _flat_empty(like, count):
    """A new 1-D buffer of `count` elements of like's dtype and kind."""
    if hasattr(like, "new_empty"):  # torch.Tensor, without importing torch
        return like.new_empty((count,))
    return np.empty(count, dtype=np.asarray(like).dtype)


def _on_gpu(x, out):
    if type(x) is np.ndarray and (out is None or type(out) is np.ndarray):  # the common case, first
        return False
    return device.describe(x) is not None or (out is not None and device.describe(out, "out") is not None)


def _size_of(x):
    if type(x) is _C.Memory:
        return x.count
    if hasattr(x, "numel"):
        return x.numel()
    return np.asarray(x).size


class Communicator:
    """A group of `size` ranks running collectives together.

    Every collective takes `async_op` (return a Work instead of waiting) and
    `timeout` (seconds; default PYCOMM_TIMEOUT or 300). Ops complete in
    submission order on every rank.
    """

    def __init__(self, rank: int, size: int, store: Store, *, transport=None, timeout=None,
                 name=None, options=None):
        if not isinstance(rank, int) or not isinstance(size, int) or size < 1 or not 0 <= rank < size:
            raise ValueError(f"need 0 <= rank < size, got rank={rank!r}, size={size!r}")
        self._timeout = (environment.check_timeout(timeout) if timeout is not None
                         else environment.default_timeout())
        self._store = store
        self.name = name if name is not None else next(_comm_ids)
        prefix = f"pycomm/{self.name}"
        self._gpu_logged = False
        self._inflight = deque()
        self._native = None
        boot_timeout = max(self._timeout, 60.0)
        hosts = [h.decode() for h in store.allgather(f"{prefix}/host", rank, size,
                                                     host_id().encode(), boot_timeout)]
        kind = choose_transport(transport, hosts)
        opts = {**environment.tuning(), **(options or {})}
        flat = opts.pop("flat", False)  # the parts of a hierarchy are flat themselves
        opts.setdefault("connect_timeout", boot_timeout)
        opts.setdefault("local_ranks", hosts.count(hosts[rank]))
        if kind == "tcp":  # rank 0's random token, through a collective any store has
            mine = secrets.token_bytes(32) if rank == 0 else b""
            opts["token"] = store.allgather(f"{prefix}/token", rank, size, mine, boot_timeout)[0]
            opts.setdefault("bind_addr", bind_address(store, hosts))
        if kind == "mpi":  # over the program's MPI communicator: only from_mpi has one
            from .mpi import native_transport

            opts["mpi_transport"] = native_transport(store, opts)
            if opts.get("p2p", 1):  # the point-to-point engine's own links
                opts["mpi_p2p_transport"] = native_transport(store, opts)
            flat = True  # one transport per communicator; sub-communicators would need MPI ones
        steps = itertools.count()

        def allgather(data: bytes):
            return store.allgather(f"{prefix}/boot{next(steps)}", rank, size, data, boot_timeout)

        self._native = _C.Communicator(rank, size, kind, allgather, opts)
        self._group = None  # the ops of an open `with comm.group()` block
        self._hosts = hosts
        self._hierarchy = None  # made by the first op that uses it
        self._shrinks = 0  # shrink() calls so far: each agrees under keys of its own
        self._hierarchical = not flat and hierarchy.wanted(hosts)
        if not self._hierarchical and type(self).allreduce is Communicator.allreduce:
            # This instance's allreduce: the same method with a native fast path
            # for numpy buffers and Memory (bindings/fast_call.h), where small ops'
            # latency is mostly the Python layer's.
            self.allreduce = self._native.fast_allreduce(Communicator.allreduce, weakref.ref(self), self._timeout)
        if type(self).send is Communicator.send and type(self).recv is Communicator.recv:  # the same for both
            self.send = self._native.fast_p2p(True, Communicator.send, weakref.ref(self), self._timeout)
            self.recv = self._native.fast_p2p(False, Communicator.recv, weakref.ref(self), self._timeout)
        self.rank = rank
        self.size = size
        self.transport = kind
        from . import flight  # here, not at the top: `python -m pycomm.flight` runs it as __main__ unimported
        flight.register(self)
        log.info(self, f"transport {kind}, {size} ranks on {len(set(hosts))} host(s), "
                       f"{opts['local_ranks']} on this one; one-step direct algorithms up to "
                       f"{opts.get('direct_max_bytes', 32 << 10)} bytes per rank block, ring/chain above")

    @classmethod
    def from_env(cls, *, timeout=None, **kwargs):
        """Rank and rendezvous from the environment pycomm.launch and torchrun set:
        RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT (or PYCOMM_STORE=file:///dir | tcp://host:port).
        Communicators made this way in one process share one store."""
        missing = [v for v in ("RANK", "WORLD_SIZE") if v not in os.environ]
        if missing:
            raise ValueError(f"Communicator.from_env needs {' and '.join(missing)} in the environment "
                             "(start the program with python -m pycomm.launch or torchrun)")
        rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        t = timeout if timeout is not None else environment.default_timeout()
        return cls(rank, size, environment.store(rank, size, max(t, 60.0)), timeout=timeout, **kwargs)

    @classmethod
    def from_mpi(cls, comm, **kwargs):
        """A communicator over the ranks of an mpi4py communicator (COMM_WORLD,
        Split, Dup, Create_group ...): same rank and size, bootstrapped with MPI
        collectives on a duplicate of it, data over pycomm's own transports,
        or over MPI point-to-point with transport="mpi" (or PYCOMM_TRANSPORT=mpi).
        Every rank of `comm` must call it. Closing the pycomm communicator frees
        the duplicate."""
        from .mpi import MPIStore

        store = MPIStore(comm)
        try:
            self = cls(store.rank, store.size, store, **kwargs)
        except BaseException:
            store.close()
            raise
        self._owned_store = store
        if self.transport == "mpi":
            from .mpi import _live

            _live.add(self)
        return self

    @property
    def timeout(self):
        """The default deadline of every op, in seconds."""
        return self._timeout

    def _timeout_for(self, timeout):
        """An op's deadline: its own (checked), else the communicator's."""
        return self._timeout if timeout is None else environment.check_timeout(timeout)

    @property
    def store(self):
        """The bootstrap Store this communicator rendezvoused through."""
        return self._store

    @property
    def hosts(self):
        """Every rank's host identity (hostname + boot id), indexed by rank."""
        return list(self._hosts)

    # -- collectives -------------------------------------------------------

    def allreduce(self, x, op="sum", out=None, async_op=False, timeout=None, *, compress=None,
                  block_size=64, error_feedback=None, stochastic=False, seed=None):
        """Reduce x over all ranks; into x itself when out is None. Returns the result (or a Work).

        compress="int8" sends int8 with one float32 scale per `block_size`
        elements (op sum or avg; float32/float16/bfloat16 in, float32 out;
        out is required or allocated for half inputs). Every element is
        rounded at most twice whatever the world size, and every rank gets
        bitwise the same result. error_feedback (a pycomm.ErrorFeedback, one
        per tensor) carries the rounding error into the next call;
        stochastic rounds stochastically, seeded by `seed` (default: the
        op's sequence number, reproducible).
        """
        timeout = self._timeout_for(timeout)
        if _on_gpu(x, out):
            if compress is None:
                int8_args.uncompressed(block_size, stochastic, seed, error_feedback)
                return self._device_op("allreduce", x, out, op, 0, async_op, timeout)
            block_size, stochastic, seed = int8_args.options(compress, block_size, stochastic, seed,
                                                         error_feedback)
            return self._device_allreduce_int8(x, out, op, block_size, stochastic, seed, error_feedback,
                                               async_op, timeout)
        if compress is None:
            int8_args.uncompressed(block_size, stochastic, seed, error_feedback)
            if self._hierarchical and not async_op and hierarchy.suitable(x, out):
                if self._hierarchy is None:
                    self._hierarchy = hierarchy.Hierarchy(self, self._hosts)
                return self._hierarchy.allreduce(x, x if out is None else out, op, timeout)
            w = self._native.collective(ALLREDUCE, x, out, op_code(op), 0, async_op, timeout)
            self._submitted("allreduce", x, op=op)
            result = x if out is None else out
        else:
            block_size, stochastic, seed = int8_args.options(compress, block_size, stochastic, seed,
                                                         error_feedback)
            n = _size_of(x)
            if out is None and not int8_args.is_float32(x):
                out = int8_args.float32_empty(x, n)
            layout = {"op": "allreduce", "count": n, "world_size": self.size, "rank": self.rank,
                      "block_size": block_size, "device": "cpu"}
            owned = self._native.int8_owned(n, block_size) if error_feedback is not None else 0
            w = int8_args.residuals(error_feedback, layout, owned, lambda worker, owner: self._native.allreduce_int8(
                x, out, op_code(op), block_size, stochastic, seed, worker, owner, async_op, timeout))
            self._submitted("allreduce", x, f" {op}, int8 block {block_size}")
            result = x if out is None else out
        return self._track(w) if async_op else result

    def reduce_scatter(self, x, op="sum", out=None, async_op=False, timeout=None, *, counts=None,
                       compress=None, block_size=64, error_feedback=None, stochastic=False, seed=None):
        """Block `rank` of the reduction of x (x.size == size * out.size).

        counts (one per rank, the same list on every rank): the uneven form
        (reduce_scatterv): x holds sum(counts) elements, block r is the
        counts[r] elements after the first r blocks.
        compress="int8": int8 on the wire, float32 out (each element rounded
        once); the other keywords as for allreduce.
        """
        timeout = self._timeout_for(timeout)
        if counts is not None:
            if compress is not None:
                raise ValueError("compress='int8' takes no counts")
            return self._collective("reduce_scatterv", x, out, op, 0, async_op, timeout, counts=counts)
        if _on_gpu(x, out):
            int8_args.gpu_uncompressed(compress)
            return self._device_op("reduce_scatter", x, out, op, 0, async_op, timeout)
        if out is None:
            n = _size_of(x)
            if n % self.size:
                raise ValueError(f"reduce_scatter needs x.size divisible by comm.size ({self.size}), got {n}")
            out = _flat_empty(x, n // self.size) if compress is None else int8_args.float32_empty(x, n // self.size)
        if compress is None:
            int8_args.uncompressed(block_size, stochastic, seed, error_feedback)
            w = self._native.collective(ROWS["reduce_scatter"].code, x, out, op_code(op), 0, async_op, timeout)
            self._submitted("reduce_scatter", x, op=op)
        else:
            block_size, stochastic, seed = int8_args.options(compress, block_size, stochastic, seed,
                                                         error_feedback)
            if (self._hierarchical and not async_op and hierarchy.suitable_reduce_scatter(x, out)
                    and x.size == self.size * out.size and op_code(op) in int8_args.SUM_AVG):
                if self._hierarchy is None:
                    self._hierarchy = hierarchy.Hierarchy(self, self._hosts)
                return self._hierarchy.reduce_scatter_int8(
                    x, out, int8_args.SUM_AVG[op_code(op)], timeout, block_size=block_size, stochastic=stochastic,
                    seed=seed, error_feedback=error_feedback)
            layout = {"op": "reduce_scatter", "count": _size_of(x), "world_size": self.size,
                      "rank": self.rank, "block_size": block_size, "device": "cpu"}
            w = int8_args.residuals(error_feedback, layout, 0, lambda worker, _: self._native.reduce_scatter_int8(
                x, out, op_code(op), block_size, stochastic, seed, worker, async_op, timeout))
            self._submitted("reduce_scatter", x, f" {op}, int8 block {block_size}")
        return self._track(w) if async_op else out

    def allgather(self, x, out=None, async_op=False, timeout=None, *, counts=None, compress=None,
                  block_size=64, stochastic=False, seed=None):
        """Every rank's x, concatenated in rank order (out.size == size * x.size).

        counts (one per rank, the same list on every rank): the uneven form
        (allgatherv): rank r passes counts[r] elements, out holds sum(counts).
        compress="int8" (weights, as ZeRO++'s qwZ): each rank quantizes its x
        once (float32/float16/bfloat16; one float32 scale per `block_size`
        elements), int8 and scales travel, and every rank dequantizes every
        part from the same bytes, its own included: every rank holds bitwise
        the same out, each element rounded once (then cast to out's dtype:
        x's, or float32). x may be this rank's part of out (in place).
        stochastic / seed as for allreduce; no error feedback.
        """
        if compress is not None:
            if counts is not None:
                raise ValueError("compress='int8' takes no counts")
            timeout = self._timeout_for(timeout)
            if _on_gpu(x, out):
                int8_args.gpu_uncompressed(compress)
            block_size, stochastic, seed = int8_args.options(compress, block_size, stochastic, seed, None)
            if out is None:
                out = _flat_empty(x, self.size * _size_of(x))
            w = self._native.allgather_int8(x, out, block_size, stochastic, seed, async_op, timeout)
            self._submitted("allgather", x, f", int8 block {block_size}")
            return self._track(w) if async_op else out
        int8_args.uncompressed(block_size, stochastic, seed, None)
        if counts is not None:
            return self._collective("allgatherv", x, out, "sum", 0, async_op, timeout, counts=counts)
        return self._collective("allgather", x, out, "sum", 0, async_op, timeout)

    def broadcast(self, x, root=0, async_op=False, timeout=None):
        """Root's x, into x on every rank."""
        return self._collective("broadcast", x, None, "sum", root, async_op, timeout)

    def barrier(self, async_op=False, timeout=None):
        """Returns once every rank has entered the barrier."""
        return self._collective("barrier", None, None, "sum", 0, async_op, timeout)

    def gather(self, x, root=0, out=None, async_op=False, timeout=None):
        """Every rank's x, concatenated in rank order, at the root (out.size ==
        size * x.size; allocated when None). Returns it at the root, None on
        the other ranks (which need not pass out)."""
        return self._collective("gather", x, out, "sum", root, async_op, timeout)

    def scatter(self, x, root=0, out=None, async_op=False, timeout=None):
        """Block `rank` of the root's x into out (x.size == size * out.size).
        x is read at the root only; the other ranks may pass None, and must
        pass out (they cannot know its size). Returns out."""
        return self._collective("scatter", x, out, "sum", root, async_op, timeout)

    def reduce(self, x, root=0, op="sum", out=None, async_op=False, timeout=None):
        """The reduction of every rank's x, at the root only: into out, or
        into x itself when out is None. Returns it at the root, None on the
        other ranks."""
        return self._collective("reduce", x, out, op, root, async_op, timeout)

    def alltoall(self, x, out=None, send_counts=None, recv_counts=None, async_op=False, timeout=None):
        """Block p of x to rank p, and block r of every rank's x, in rank
        order, into out. Even split by default (x.size == out.size, a multiple
        of size); with send_counts and recv_counts (elements per peer) the
        uneven form (alltoallv): x holds sum(send_counts), out
        sum(recv_counts). x and out must not overlap."""
        if send_counts is None and recv_counts is None:
            return self._collective("alltoall", x, out, "sum", 0, async_op, timeout)
        if send_counts is None or recv_counts is None:
            raise ValueError("the uneven alltoall needs both send_counts and recv_counts")
        return self._collective("alltoallv", x, out, "sum", 0, async_op, timeout, counts=send_counts,
                                recv_counts=recv_counts)

    # -- point-to-point -----------------------------------------------------

    def send(self, x, dst, tag=0, async_op=False, timeout=None):
        """Sends x to rank dst with `tag`. Messages between two ranks with one
        tag arrive in the order sent. Returns when x may be reused (or a
        Work). Independent of the collectives: never queued behind them."""
        return self._p2p(True, x, dst, tag, False, async_op, timeout)

    def recv(self, x, src=None, tag=0, async_op=False, timeout=None, *, allow_shorter=False):
        """Receives into x the first message from rank src (None: any rank)
        with `tag`. Returns the source rank (or a Work whose `source` and
        `count` say who sent and how many elements came). A message larger
        than x is a MismatchError on both ranks, a shorter one too unless
        allow_shorter. (A small send, up to 32 KiB, completes before its
        receive; its sender's error comes from its next point-to-point call
        with that rank.)"""
        return self._p2p(False, x, src, tag, allow_shorter, async_op, timeout)

    def isend(self, x, dst, tag=0, timeout=None):
        """send(..., async_op=True)."""
        return self.send(x, dst, tag, async_op=True, timeout=timeout)

    def irecv(self, x, src=None, tag=0, timeout=None, *, allow_shorter=False):
        """recv(..., async_op=True)."""
        return self.recv(x, src, tag, async_op=True, timeout=timeout, allow_shorter=allow_shorter)

    def group(self):
        """`with comm.group(): ...` starts every send and receive inside when
        the block exits, together, each returning a Work (NCCL's group,
        torch's batch_isend_irecv): no order of calls inside can deadlock."""
        return Group(self)

    def _enter_group(self, group):
        if self._group is not None:
            raise ValueError("comm.group() blocks do not nest")
        self._group = group

    def _exit_group(self, group, post):
        """Ends the open group: posts its ops together (when `post`) and returns their Works."""
        self._group = None
        if not post or not group.ops:
            return []
        return [self._track(w) for w in self._native.p2p_group(group.ops)]

    def _p2p(self, send, x, peer, tag, allow_shorter, async_op, timeout):
        what = "dst" if send else "src"
        if peer is None and not send:
            peer = -1
        if isinstance(peer, bool) or not isinstance(peer, int):
            raise TypeError(f"{what} must be an int{'' if send else ' or None'}, not {type(peer).__name__}")
        if isinstance(tag, bool) or not isinstance(tag, int):
            raise TypeError(f"tag must be an int, not {type(tag).__name__}")
        if not -2**31 <= tag < 2**31:
            raise ValueError(f"tag must fit in 32 bits, got {tag}")
        if type(x) is not np.ndarray and x is not None:
            x = device.describe(x) or x  # GPU buffers go through pinned host memory (device_staging.h)
        timeout = self._timeout_for(timeout)
        if self._group is not None:
            return self._group.add((bool(send), x, peer, tag, bool(allow_shorter), timeout))
        w = self._native.p2p_one(send, x, peer, tag, allow_shorter, async_op, timeout)
        return self._track(w) if async_op else w

    def _collective(self, coll, x, out, op, root, async_op, timeout, counts=None, recv_counts=None):
        """Every uncompressed op of the core's table (_C.operations()): the
        output allocated where the caller may leave it out, then one native
        entry point that checks everything before anything is sent."""
        row = ROWS[coll]
        timeout = self._timeout_for(timeout)
        if row.rooted:
            if isinstance(root, bool) or not isinstance(root, int):
                raise TypeError(f"root must be an int, not {type(root).__name__}")
            has_in = row.has_in and (self.rank == root or not row.in_at_root)
            has_out = row.has_out and (self.rank == root or not row.out_at_root)
            if not has_in:
                x = None  # read at the root only
        else:
            has_in, has_out = row.has_in, row.has_out
        if type(x) is not np.ndarray and x is not None or type(out) is not np.ndarray and out is not None:
            if (x if has_in else out) is not None and _on_gpu(x if has_in else out, out if has_in else None):
                return self._device_op(coll, x, out, op, root, async_op, timeout, counts=counts)
        if out is None and has_out and not row.in_place and x is not None:
            full = OPERATIONS[coll]
            want = elems(full["out"], per_rank(full, _size_of(x), self.size), self.size, self.rank, counts,
                          recv_counts)
            if want is not None:
                out = _flat_empty(x, want)
        code = op_code(op) if row.reduces else 0
        if row.counts:
            w = self._native.collective_v(row.code, x, out if has_out else None, code, root, counts, recv_counts,
                                          async_op, timeout)
        else:
            w = self._native.collective(row.code, x, out if has_out else None, code, root, async_op, timeout)
        if log.level >= 3:
            self._submitted(coll, x, "", op if row.reduces else None, root if row.rooted else None)
        if async_op:
            return self._track(w)
        if not has_out:
            return None
        return x if out is None else out

    def _submitted(self, coll, x, detail="", op=None, root=None):
        # Called once the native core took an op (the last it numbered).
        if log.level >= 3:
            seq = self._native.ops_submitted() - 1
            detail = detail + ("" if op is None else f" {op}") + ("" if root is None else f" root {root}")
            if x is None:
                log.trace(self, f"#{seq} {coll}, {self._native.algorithm(coll, 0)}")
                return
            if type(x) is _C.Memory:
                count, block = x.count, x.nbytes
            else:
                count = x.numel() if callable(getattr(x, "numel", None)) else getattr(x, "size", "?")
                block = count * (x.element_size() if hasattr(x, "element_size") else np.dtype(x.dtype).itemsize)
            if OPERATIONS[coll]["in"].startswith("ranks"):
                block //= self.size
            algo = self._native.algorithm(coll + "_int8" if "int8" in detail else coll, block)
            if "GPU" in detail:
                algo = "GPU " + ("CUDA IPC" if "IPC" in self.device_path else "pinned staging")
            log.trace(self, f"#{seq} {coll} {getattr(x, 'dtype', '')} x {count}{detail}, {algo}")

    def _device_op(self, coll, x, out, op, root, async_op, timeout, counts=None):
        """GPU buffers (pycomm/device.py): checked here against the op's row, run by the native GPU path."""
        row = OPERATIONS[coll]
        if not row["gpu"]:
            raise TypeError(f"{coll} of GPU buffers has no GPU path yet (host buffers work)")
        n, r = self.size, self.rank
        has_in, has_out = present(row["in"], r, root), present(row["out"], r, root)
        dx = device.describe(x, "x") if has_in else None
        if has_in and dx is None:
            raise TypeError("out is in GPU memory but x is not: pass both on the GPU or both on the host")
        if has_out and out is None and row["in_place"]:
            out = x
        if row["counts"]:
            if len(counts) != n:
                raise ValueError(f"counts has {len(counts)} entries; the communicator has {n} ranks")
            counts = [int(c) for c in counts]
            count = sum(counts)
        elif dx is not None:
            count = per_rank(row, dx.count, n)
            if count is None:
                raise ValueError(f"{coll} needs x.size divisible by comm.size ({n}), got {dx.count}")
        else:
            do = device.describe(out, "out") if has_out and out is not None else None
            if do is None and has_out:
                raise ValueError(f"{coll} needs out on this rank")
            count = 0 if do is None else do.count // n if row["out"].startswith("ranks") else do.count
        if has_out and out is None:
            out = device.empty_like(dx, elems(row["out"], count, n, r, counts, None))
        do = (dx if out is x else device.describe(out, "out")) if has_out else None
        if has_out and do is None:
            raise TypeError("x is in GPU memory but out is not: pass both on the GPU or both on the host")
        if dx is not None and do is not None and do.dtype != dx.dtype:
            raise TypeError("out and x have different dtypes")
        for what, buf, extent in (("x", dx, row["in"]), ("out", do, row["out"])):
            want = elems(extent, count, n, r, counts, None)
            if buf is not None and buf.count != want:
                raise ValueError(f"{coll} of {count} elements on {n} ranks needs {what} of {want} elements, "
                                 f"got {buf.count}")
        lead = dx if dx is not None else do
        w = self._native.device_op(coll, dx.ptr if dx else 0, do.ptr if do else 0, count,
                                   lead.dtype if lead else 0, op_code(op) if row["reduces"] else 0, root,
                                   counts, lead.stream if lead else 0, async_op, timeout)
        self._submitted(coll, x, f" {op}, GPU buffers" if row["reduces"] else ", GPU buffers")
        if not self._gpu_logged and log.level >= 2 and not async_op:
            self._gpu_logged = True
            log.info(self, f"GPU buffers: {self.device_path}")
        if async_op:
            return self._track(w, (x, out, dx.keep if dx else None, do.keep if do else None))
        return out if has_out else None

    def _device_allreduce_int8(self, x, out, op, block_size, stochastic, seed, ef, async_op, timeout):
        dx = device.describe(x, "x")
        if dx is None:
            raise TypeError("out is in GPU memory but x is not: pass both on the GPU or both on the host")
        if out is None:
            out = x if dx.dtype == 0 else device.empty_like(dx, dx.count, float32=True)
        do = dx if out is x else device.describe(out, "out")
        if do is None:
            raise TypeError("x is in GPU memory but out is not: pass both on the GPU or both on the host")
        if do.dtype != 0:
            raise TypeError("out must be float32: a compressed allreduce returns float32")
        if do.count != dx.count:
            raise ValueError(f"out must have {dx.count} elements, got {do.count}")
        worker = owner = None
        if ef is not None:  # residuals on the tensor's GPU
            layout = {"op": "allreduce", "count": dx.count, "world_size": self.size, "rank": self.rank,
                      "block_size": block_size, "device": f"cuda:{device.index_of(dx)}"}
            worker, owner = ef._buffers(layout, self._native.int8_owned(dx.count, block_size),
                                        lambda n: device.zeros_like(dx, n))
        ptr = lambda a: 0 if a is None else device.describe(a, "error feedback").ptr  # noqa: E731
        w = self._native.device_allreduce_int8(dx.ptr, do.ptr, dx.count, dx.dtype, op_code(op), block_size,
                                               stochastic, seed, ptr(worker), ptr(owner), dx.stream,
                                               async_op, timeout)
        self._submitted("allreduce", x, f" {op}, int8 block {block_size}, GPU buffers")
        return self._track(w, (x, out, worker, owner, dx.keep, do.keep)) if async_op else out

    @property
    def device_path(self):
        """How GPU buffers travel: CUDA IPC staging on one host, pinned host staging across hosts."""
        return self._native.device_path()

    def flight_record(self):
        """The flight recorder's entries, oldest first (pycomm/flight.py): dicts
        of seq, operation, dtype, count, op, root, block_size, device, state
        (scheduled, started, completed, failed), queued_ns / started_ns /
        ended_ns (wall clock) and error. Empty with PYCOMM_FLIGHT_RECORDER=0."""
        return self._native.flight_record()

    def dump_flight_record(self, path=None):
        """Writes flight_record() in the format torch's flight recorder
        analyzer reads, to `path` or into PYCOMM_FLIGHT_DIR; returns the file."""
        from . import flight
        return flight.dump(self, path)

    # -- lifecycle ---------------------------------------------------------

    def _track(self, work, keep=None):
        # Buffers of async ops must outlive them even if the caller drops the
        # Work (host buffers: the native Work holds them; GPU ones: `keep`).
        inflight = self._inflight
        while inflight and inflight[0][0].is_completed():
            inflight.popleft()
        inflight.append((work, keep))
        return work

    def shrink(self, timeout=None):
        """After a rank died (PeerLostError, or abort() after one): a new
        Communicator of the ranks still alive, renumbered in their old order,
        agreed through the store by every survivor within `timeout` (default:
        this communicator's), or a CommError naming the ranks that did not
        take part or that see other deaths (pycomm/shrink.py). Call it on every
        survivor; this communicator stays failed (close() it)."""
        timeout = self._timeout_for(timeout)
        self._shrinks += 1
        alive = shrink.agree(self, self._shrinks, timeout)
        return Communicator(alive.index(self.rank), len(alive), self._store, transport=self.transport,
                            timeout=self._timeout, name=f"{self.name}/shrink{self._shrinks}")

    def abort(self, reason="aborted by the user"):
        """Fail every pending op here and on every peer (callable from any thread)."""
        if self._native is not None:
            self._native.abort(str(reason))

    def close(self):
        """Finish queued ops and release the transport. Idempotent."""
        if getattr(self, "_hierarchy", None) is not None:
            self._hierarchy.close()
            self._hierarchy = None
        if self._native is not None:
            self._native.close()
            self._inflight.clear()
        owned = getattr(self, "_owned_store", None)
        if owned is not None:
            self._owned_store = None
            owned.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"<pycomm.Communicator rank {self.rank} of {self.size} over {self.transport}>"
