"""Hierarchical collectives for several ranks per host on several hosts.

Allreduce: reduce-scatter inside each host over shared memory, allreduce of
each slice across hosts (local rank j of every host together, so all of a
host's ranks drive its link), allgather inside the host. Each host link
carries 2(H-1)/H of the data instead of the flat ring's 2(n-1)/n, with
n = H x L ranks: 1.5x less at 2 hosts x 2 ranks.

Compressed (int8) reduce-scatter (ZeRO++'s hpZ/qgZ idea): a float32
reduce-scatter inside each host first, so local rank j holds its host's sum
of the blocks of every host's rank j; then the int8 two-shot across hosts
among the ranks j, which rounds each host's partial sum once on the slow
link. A host link carries about (H-1)/H x N/L int8 bytes per rank instead of
the flat two-shot's (n-L)/n x N: 2x less at 2 hosts x 2 ranks; and H-1
quantized terms enter each sum instead of n-1.

Chosen for blocking host ops when there is more than one host and every
host has the same number (> 1) of ranks; PYCOMM_HIERARCHICAL=0 turns it off,
=1 asks for it (an error where the placement does not allow it). The
sub-communicators are made on first use, by every rank together (the ops are
collective, and every rank decides from the same host list).
"""
import os

import numpy as np

from . import _C, log


def placement(hosts):
    """(host index, local index, hosts, ranks per host) for each rank, or None
    when the placement is not a uniform several-hosts x several-ranks grid."""
    order = list(dict.fromkeys(hosts))
    per_host = [hosts.count(h) for h in order]
    if len(order) < 2 or per_host[0] < 2 or len(set(per_host)) != 1:
        return None
    seen = {}
    grid = []
    for h in hosts:
        grid.append((order.index(h), seen.get(h, 0)))
        seen[h] = seen.get(h, 0) + 1
    return grid, len(order), per_host[0]


def wanted(hosts):
    """Whether allreduce should go hierarchical for this host list."""
    setting = os.environ.get("PYCOMM_HIERARCHICAL", "auto").strip().lower() or "auto"
    if setting not in ("auto", "0", "1"):
        raise ValueError(f"PYCOMM_HIERARCHICAL must be auto, 0 or 1, got {setting!r}")
    grid = placement(hosts)
    if setting == "1" and grid is None:
        raise ValueError("PYCOMM_HIERARCHICAL=1 needs several hosts with the same number (> 1) of "
                         f"ranks each; the ranks are on {len(set(hosts))} host(s)")
    return setting != "0" and grid is not None


# Pipelined pieces: about PIECE_BYTES per local rank each (PYCOMM_HIERARCHY_PIECE_BYTES),
# at most PIECES_MAX.
PIECE_BYTES = 2 << 20
PIECES_MAX = 16

_DTYPES = {np.dtype(t) for t in _C.DTYPES if t != "bfloat16"}  # numpy has no bfloat16


def suitable(x, out):
    """Plain, valid numpy buffers only; anything else takes the flat path,
    whose checks raise the right errors before anything is sent."""
    def ok(a, writable):
        return (isinstance(a, np.ndarray) and a.dtype in _DTYPES and a.flags.c_contiguous
                and (a.flags.writeable or not writable))
    if out is None:
        return ok(x, True)
    return ok(x, False) and ok(out, True) and out.dtype == x.dtype and out.size == x.size


def suitable_reduce_scatter(x, out):
    """float32 numpy x and out (size x out.size elements) for the compressed
    reduce-scatter; anything else takes the flat two-shot."""
    return (isinstance(x, np.ndarray) and isinstance(out, np.ndarray) and x.dtype == np.float32
            and out.dtype == np.float32 and x.flags.c_contiguous and out.flags.c_contiguous
            and out.flags.writeable)


class Hierarchy:
    def __init__(self, comm, hosts):
        from .communicator import Communicator  # the layers above this one

        (grid, self.nhosts, self.local) = placement(hosts)
        host, local = grid[comm.rank]
        self.size = comm.size
        rank_of = {hl: r for r, hl in enumerate(grid)}
        self._host_ranks = [[rank_of[(h, j)] for j in range(self.local)] for h in range(self.nhosts)]
        self.piece_bytes = int(os.environ.get("PYCOMM_HIERARCHY_PIECE_BYTES", PIECE_BYTES))
        if self.piece_bytes < 1:
            raise ValueError(f"PYCOMM_HIERARCHY_PIECE_BYTES must be positive, got {self.piece_bytes}")
        kw = {"timeout": comm.timeout, "options": {"flat": True, "p2p": 0}}  # its parts run allreduce only
        self.intra = Communicator(local, self.local, comm.store, name=f"{comm.name}/host{host}", **kw)
        self.inter = Communicator(host, self.nhosts, comm.store, name=f"{comm.name}/slice{local}", **kw)
        log.info(comm, f"hierarchical allreduce and int8 reduce_scatter: {self.nhosts} hosts x {self.local} ranks "
                       f"(inside hosts over {self.intra.transport}, across over {self.inter.transport})")

    def allreduce(self, x, out, op, timeout):
        """out = the reduction of x over all ranks (numpy arrays that suitable() accepted).

        In pieces, pipelined: while the host link carries piece k across
        hosts, shared memory reduces piece k+1 or gathers piece k-1 (the two
        communicators run their ops on their own threads), so the link does
        not idle through the steps inside the host. Every rank submits the
        same ops in the same order to each communicator."""
        count = x.size
        per = -(-count // self.local)  # elements per local rank, padded
        padded = per * self.local != count
        if not padded:  # whole slices: straight from x into out
            src, buf = x.reshape(-1), out.reshape(-1)
        else:
            src = buf = np.zeros(per * self.local, x.dtype)
            buf[:count] = x.reshape(-1)
        pieces = max(1, min(PIECES_MAX, per * x.itemsize // self.piece_bytes))
        bounds = [per * k // pieces for k in range(pieces + 1)]
        spans = [(self.local * a, self.local * b) for a, b in zip(bounds, bounds[1:])]
        parts = [np.empty(b - a, x.dtype) for a, b in zip(bounds, bounds[1:])]
        kw = {"op": op, "timeout": timeout, "async_op": True}
        scattered = [self.intra.reduce_scatter(src[a:b], out=p, **kw) for (a, b), p in zip(spans, parts)]
        across = []
        for work, p in zip(scattered, parts):
            work.wait()
            across.append(self.inter.allreduce(p, **kw))
        gathered = []
        for work, (a, b), p in zip(across, spans, parts):
            work.wait()
            gathered.append(self.intra.allgather(p, out=buf[a:b], timeout=timeout, async_op=True))
        for work in gathered:
            work.wait()
        if padded:
            out.reshape(-1)[...] = buf[:count]
        return out

    def reduce_scatter_int8(self, x, out, op, timeout, **int8):
        """out = block `rank` of the reduction of x (float32 numpy arrays that
        suitable_reduce_scatter() accepted), int8 across hosts only; int8:
        block_size, stochastic, seed, error_feedback (of the part that
        crosses hosts: H blocks)."""
        count = out.size
        blocks = x.reshape(self.size, count)
        partial = np.empty((self.nhosts, count), np.float32)
        # Host h's ranks' blocks, reduced inside this host: local rank j gets
        # the sum for host h's rank j (straight from x where those ranks are
        # numbered consecutively, as launchers do).
        works = []
        for h, ranks in enumerate(self._host_ranks):
            first = ranks[0]
            src = blocks[first:first + self.local] if ranks == list(range(first, first + self.local)) \
                else blocks[ranks]
            works.append(self.intra.reduce_scatter(src.reshape(-1), "sum", out=partial[h], timeout=timeout,
                                                   async_op=True))
        for w in works:
            w.wait()
        self.inter.reduce_scatter(partial.reshape(-1), "sum", out=out, timeout=timeout, compress="int8", **int8)
        if op == "avg":
            np.divide(out, np.float32(self.size), out=out)
        return out

    def close(self):
        self.intra.close()
        self.inter.close()
