"""A seeded random sequence of collectives, checked against numpy on every rank.

    python -m pycomm.launch -n 4 tests/ranks/fuzz.py --ops 10000        # the long fuzz
    python -m pycomm.launch -n 3 tests/ranks/fuzz.py --seconds 600      # soak: ops/s and RSS

Every rank draws the same sequence from the seed: which of several
communicators, which collective (int8 allreduce included), dtype, op, size
(0 to 4 MiB, log-uniform), root, in place or not, blocking or async (up to 4
in flight, checked when waited). Inputs are a function of (seed, op, rank), so
every rank can compute every reference. Exit status non-zero on the first
wrong result. With --seconds it runs until time is up and prints ops/s and the
resident memory every 30 s, failing if memory grows after the first minute.
"""
import argparse
import time

import numpy as np

from common import check_close, comm_from_env, log, reference

DTYPES = ["float32", "float64", "float16", "int8", "uint8", "int32", "int64"]
FLOATS = {"float32", "float64", "float16"}
COLLS = ["allreduce", "allreduce", "reduce_scatter", "allgather", "broadcast", "barrier", "int8",
         "gather", "scatter", "reduce", "alltoall", "alltoallv", "p2p"]


def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def inputs(seed, i, n, count, dtype, op):
    out = []
    for r in range(n):
        rng = np.random.default_rng([seed, i, r])
        if dtype in FLOATS:
            lo, hi = (0.5, 1.5) if op == "prod" else (-1.0, 1.0)
            out.append(rng.uniform(lo, hi, count).astype(dtype))
        else:
            info = np.iinfo(dtype)
            span = 2 if op == "prod" else 50
            out.append(rng.integers(max(info.min, -span), min(info.max, span) + 1, count).astype(dtype))
    return out


class _Both:
    """Two Works waited as one."""

    def __init__(self, *works):
        self.works = works

    def wait(self, timeout=None):
        for w in self.works:
            w.wait(timeout)
        return True


class Op:
    """One drawn op: runs it (maybe async) and checks its result."""

    def __init__(self, rng, i, seed, comms):
        self.i, self.seed = i, seed
        self.comm = comms[rng.integers(len(comms))]
        n = self.comm.size
        self.coll = COLLS[rng.integers(len(COLLS))]
        self.dtype = "float32" if self.coll == "int8" else DTYPES[rng.integers(len(DTYPES))]
        ops = ["sum", "prod", "min", "max"] + (["avg"] if self.dtype in FLOATS else [])
        self.op = "sum" if self.coll == "int8" else ops[rng.integers(len(ops))]
        itemsize = np.dtype(self.dtype).itemsize
        nbytes = 0 if rng.random() < 0.05 else int(np.exp(rng.uniform(0, np.log(4 << 20))))
        self.count = nbytes // itemsize // n  # per rank for reduce_scatter / allgather blocks
        self.root = int(rng.integers(n))
        self.inplace = bool(rng.random() < 0.5)
        self.is_async = bool(rng.random() < 0.3)

    def start(self):
        c, n, r = self.comm, self.comm.size, self.comm.rank
        kw = {"async_op": True} if self.is_async else {}
        if self.coll == "barrier":
            self.result = None
            w = c.barrier(**kw)
        elif self.coll in ("allreduce", "int8"):
            self.xs = inputs(self.seed, self.i, n, self.count * n, self.dtype, self.op)
            x = self.xs[r].copy()
            self.result = x if self.inplace else np.empty_like(x)
            extra = {"compress": "int8"} if self.coll == "int8" else {}
            w = c.allreduce(x, op=self.op, out=None if self.inplace else self.result, **extra, **kw)
        elif self.coll == "reduce_scatter":
            self.xs = inputs(self.seed, self.i, n, self.count * n, self.dtype, self.op)
            x = self.xs[r].copy()
            self.result = x[r * self.count:(r + 1) * self.count] if self.inplace else np.empty(self.count, self.dtype)
            w = c.reduce_scatter(x, op=self.op, out=self.result, **kw)
        elif self.coll == "allgather":
            self.xs = inputs(self.seed, self.i, n, self.count, self.dtype, "sum")
            self.result = np.empty(self.count * n, self.dtype)
            src = self.result[r * self.count:(r + 1) * self.count] if self.inplace else self.xs[r]
            src[...] = self.xs[r]
            w = c.allgather(src, out=self.result, **kw)
        elif self.coll == "gather":
            self.xs = inputs(self.seed, self.i, n, self.count, self.dtype, "sum")
            self.result = np.empty(self.count * n, self.dtype) if r == self.root else None
            w = c.gather(self.xs[r], root=self.root, out=self.result, **kw)
        elif self.coll == "scatter":
            self.xs = inputs(self.seed, self.i, n, self.count * n, self.dtype, "sum")
            self.result = np.empty(self.count, self.dtype)
            w = c.scatter(self.xs[r] if r == self.root else None, root=self.root, out=self.result, **kw)
        elif self.coll == "reduce":
            self.xs = inputs(self.seed, self.i, n, self.count * n, self.dtype, self.op)
            x = self.xs[r].copy()
            self.result = x if self.inplace else np.empty_like(x)
            w = c.reduce(x, root=self.root, op=self.op, out=None if self.inplace else self.result, **kw)
        elif self.coll == "alltoall":
            self.xs = inputs(self.seed, self.i, n, self.count * n, self.dtype, "sum")
            self.result = np.empty(self.count * n, self.dtype)
            w = c.alltoall(self.xs[r], out=self.result, **kw)
        elif self.coll == "alltoallv":  # counts[p][q]: what p sends q, drawn from (seed, op)
            g = np.random.default_rng([self.seed, self.i, 99])
            self.counts = g.integers(0, max(self.count, 1) * 2 + 1, (n, n)).tolist()
            self.xs = [inputs(self.seed, self.i, n, sum(self.counts[p]), self.dtype, "sum")[p] for p in range(n)]
            recv = [self.counts[p][r] for p in range(n)]
            self.result = np.empty(sum(recv), self.dtype)
            w = c.alltoall(self.xs[r], out=self.result, send_counts=self.counts[r], recv_counts=recv, **kw)
        elif self.coll == "p2p":  # a ring exchange, receive posted first, tag = op number
            self.xs = inputs(self.seed, self.i, n, self.count, self.dtype, "sum")
            self.result = np.empty(self.count, self.dtype)
            rw = c.irecv(self.result, (r - 1) % n, tag=self.i)
            sw = c.isend(self.xs[r], (r + 1) % n, tag=self.i)
            if not self.is_async:
                rw.wait()
                sw.wait()
            self.works = (rw, sw)
            return None if not self.is_async else _Both(rw, sw)
        else:  # broadcast
            self.xs = inputs(self.seed, self.i, n, self.count, self.dtype, "sum")
            self.result = self.xs[r].copy()
            w = c.broadcast(self.result, root=self.root, **kw)
        return w if self.is_async else None

    def check(self):
        n, r = self.comm.size, self.comm.rank
        what = f"op {self.i}: {self.coll} {self.dtype} {self.op} count={self.count} on comm {self.comm.name}"
        if self.coll == "barrier":
            return
        if self.coll in ("allgather", "gather"):
            if self.result is not None:
                assert np.array_equal(self.result, np.concatenate(self.xs)), what
        elif self.coll == "scatter":
            assert np.array_equal(self.result, self.xs[self.root][r * self.count:(r + 1) * self.count]), what
        elif self.coll == "alltoall":
            want = np.concatenate([x[r * self.count:(r + 1) * self.count] for x in self.xs])
            assert np.array_equal(self.result, want), what
        elif self.coll == "p2p":
            assert np.array_equal(self.result, self.xs[(r - 1) % n]), what
        elif self.coll == "alltoallv":
            starts = [np.cumsum([0] + self.counts[p]) for p in range(n)]
            want = np.concatenate([self.xs[p][starts[p][r]:starts[p][r + 1]] for p in range(n)])
            assert np.array_equal(self.result, want), what
        elif self.coll == "broadcast":
            assert np.array_equal(self.result, self.xs[self.root]), what
        elif self.coll == "int8":
            ref = reference(self.xs, "sum", "float32")
            if ref.size:
                err = np.sqrt(np.mean((self.result - ref) ** 2) / max(np.mean(ref ** 2), 1e-30))
                assert err <= 0.02, f"{what}: int8 error {err:.3%}"
        else:
            if self.coll == "reduce" and r != self.root:
                return
            ref = reference(self.xs, self.op, self.dtype)
            if self.coll == "reduce_scatter":
                ref = ref[r * self.count:(r + 1) * self.count]
            check_close(self.result, ref, self.dtype, what)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ops", type=int, default=300)
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--comms", type=int, default=2)
    p.add_argument("--seconds", type=float, help="soak: run this long instead of --ops")
    args = p.parse_args()
    comms = [comm_from_env(timeout=120, name=f"fuzz{k}") for k in range(args.comms)]
    rng = np.random.default_rng(args.seed)
    pending = []
    start = last_report = last_sample = time.monotonic()
    rss = []
    i = 0
    while args.seconds or i < args.ops:
        if args.seconds:  # every rank must draw the same number of ops: rank 0's clock decides
            go = np.array([1 if time.monotonic() - start < args.seconds else 0], np.int32)
            comms[0].broadcast(go, root=0)
            if not go[0]:
                break
        op = Op(rng, i, args.seed, comms)
        w = op.start()
        if w is None:
            op.check()
        else:
            pending.append((w, op))
        if len(pending) > 4 or (pending and w is None):
            for w_, op_ in pending:
                w_.wait()
                op_.check()
            pending.clear()
        i += 1
        now = time.monotonic()
        if args.seconds and now - last_sample >= 10:
            # Sampled with nothing in flight, so only what stays is counted.
            for w_, op_ in pending:
                w_.wait()
                op_.check()
            pending.clear()
            last_sample = now
            rss.append((now - start, rss_mib()))
            if now - last_report >= 30:
                last_report = now
                log(comms[0], f"{now - start:6.0f} s: {i} ops, {i / (now - start):.0f} ops/s, "
                              f"RSS {rss[-1][1]:.1f} MiB")
    for w, op in pending:
        w.wait()
        op.check()
    for c in comms:
        c.close()
    settled = [m for t, m in rss if t >= 60]  # after the first minute (caches filled)
    if len(settled) >= 6:
        # The least of a few samples: a leak lifts the floor, a transient does not.
        first, last = min(settled[:3]), min(settled[-3:])
        log(comms[0], f"RSS after the first minute: {first:.1f} -> {last:.1f} MiB (floor of 3 samples)")
        assert last - first <= max(8.0, 0.05 * first), f"memory grows: {first:.1f} -> {last:.1f} MiB"
    log(comms[0], f"fuzz ok: {i} ops on {comms[0].size} ranks, seed {args.seed}")


if __name__ == "__main__":
    main()
