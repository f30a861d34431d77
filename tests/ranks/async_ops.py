"""Asynchronous ops: Work handles, submission order, mixing with blocking calls."""
import time

import numpy as np

import pycomm
from common import comm_from_env


def main():
    with comm_from_env(timeout=60) as comm:
        n, r = comm.size, comm.rank
        total = n * (n + 1) / 2
        # Many async ops in flight, waited in reverse order.
        xs = [np.full(1000 * (i + 1), r + 1, np.float32) for i in range(8)]
        works = [comm.allreduce(x, async_op=True) for x in xs]
        assert all(isinstance(w, pycomm.Work) for w in works)
        for w in reversed(works):
            assert w.wait() is True
            assert w.is_completed() and w.exception() is None
        for x in xs:
            assert np.all(x == total), x[:4]
        # Order: an async op then a blocking op on the same buffer; the
        # blocking one must see the async one's result (submission order).
        x = np.full(300_000, r + 1, np.float64)
        w = comm.allreduce(x, async_op=True)
        comm.allreduce(x)
        assert w.is_completed()
        assert np.all(x == total * n), x[:4]
        # Every collective has an async form.
        g = comm.allgather(np.full(3, r, np.int64), async_op=True)
        b = np.full(5, r, np.int32)
        bw = comm.broadcast(b, root=n - 1, async_op=True)
        rs = comm.reduce_scatter(np.ones(4 * n, np.float32), async_op=True)
        bar = comm.barrier(async_op=True)
        for w in (g, bw, rs, bar):
            w.wait(timeout=30)
        assert np.all(b == n - 1)
        # wait(timeout) gives up on a slow op without failing it.
        if n > 1:
            y = np.ones(4, np.float32)
            if r == 0:
                w = comm.allreduce(y, async_op=True)
                try:
                    w.wait(timeout=0.2)
                except pycomm.TimeoutError:
                    pass
                else:
                    raise AssertionError("wait(timeout=0.2) returned before the slow rank joined")
                assert w.wait() and np.all(y == n)
            else:
                time.sleep(1.0)
                comm.allreduce(y)
        comm.barrier()
        if r == 0:
            print("async ok")


if __name__ == "__main__":
    main()
