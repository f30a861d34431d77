"""Failure scenarios, one per argv[1]. Each rank checks it got the error it
should; exit status 0 means every rank saw the right error."""
import sys
import time

import numpy as np

import pycomm
from common import comm_from_env, expect


def mismatch(comm):
    # Rank 1 disagrees on the count: every rank must name ranks 0/1 or 1/2.
    count = 12 if comm.rank == 1 else 10
    e = expect(pycomm.MismatchError, lambda: comm.allreduce(np.ones(count, np.float32)), "rank 1")
    assert "count" in str(e) or "x 12" in str(e), str(e)
    # The communicator is unusable afterwards, and says why.
    expect(pycomm.CommError, lambda: comm.allreduce(np.ones(10, np.float32)), "failed earlier")


def mismatch_op(comm):
    # Rank 0 broadcasts while rank 1 allreduces. Which rank notices first
    # varies; every rank must raise a MismatchError naming the allreduce.
    x = np.ones(1000, np.float32)
    if comm.rank == 1:
        expect(pycomm.MismatchError, lambda: comm.allreduce(x), "allreduce", "rank 0")
        return
    try:
        comm.broadcast(x, root=0)
    except pycomm.MismatchError as e:
        assert "broadcast" in str(e) and "allreduce" in str(e), str(e)
        return
    # The broadcast root waits for nobody: it hears of the mismatch at its next call.
    expect(pycomm.MismatchError, comm.barrier, "allreduce", "rank 1")


def mismatch_kinds(comm):
    # Each disagreement on a fresh communicator (a mismatch breaks the one it
    # happens on): every rank raises MismatchError naming what differs, and
    # no output is touched.
    r = comm.rank
    cases = [
        ("dtype", lambda c: c.allreduce(np.ones(64, np.float32 if r else np.float64)), "float64"),
        ("op", lambda c: c.allreduce(np.ones(64, np.float32), op="max" if r else "sum"), "max"),
        ("root", lambda c: c.broadcast(np.ones(64, np.float32), root=1 if r else 0), "broadcast #0"),
        ("compressed", lambda c: c.allreduce(np.ones(64, np.float32), compress="int8" if r else None),
         "allreduce_int8"),
        ("block", lambda c: c.allreduce(np.ones(256, np.float32), compress="int8",
                                        block_size=128 if r else 64), "block 128"),
        # Each rank thinks the other is the root: both send and return, and
        # the mismatch surfaces at the next call (roots that both wait to
        # receive could only time out, naming the peer not heard from).
        ("gather root", lambda c: c.gather(np.ones(4, np.float32), root=0 if r else 1), "gather #0"),
        ("alltoall vs reduce", lambda c: c.alltoall(np.ones(4 * c.size, np.float32)) if r
         else c.reduce(np.ones(4, np.float32), root=0), "alltoall #0"),
        ("alltoallv counts", lambda c: c.alltoall(np.ones(c.size + r, np.float32),
                                                  send_counts=[1 + (r if p == 0 else 0) for p in range(c.size)],
                                                  recv_counts=[1] * c.size), "bytes"),
        ("allgatherv counts", lambda c: c.allgather(np.ones(([2, 2 + (r == 1)] + [0] * c.size)[r], np.float32),
                                                    counts=[2, 2 + (r == 1)] + [0] * (c.size - 2)),
         "allgatherv #0"),
    ]
    for what, call, mention in cases:
        c = comm_from_env(timeout=30, name=f"mismatch-{what}")
        try:
            call(c)
            # A rank that waits for nobody it disagrees with (a broadcast root,
            # gather's senders, an alltoallv rank whose own receives match):
            # both sent and returned, and the mismatch surfaces at the next call.
            assert what in ("root", "gather root", "alltoallv counts"), f"{what}: no MismatchError"
            c.barrier()
        except pycomm.MismatchError as e:
            assert mention in str(e), f"{what}: {e}"
        else:
            raise AssertionError(f"{what}: no MismatchError at the next call either")
        c.close()


def timeout(comm):
    x = np.ones(4, np.float32)
    comm.barrier()  # op #0: both ranks meet once
    if comm.rank == 1:
        time.sleep(2.5)  # never joins in time
        expect(pycomm.CommError, lambda: comm.allreduce(x, timeout=30), "rank 0")
        return
    t0 = time.monotonic()
    # The error names who has not reached this op, and where it was last seen.
    expect(pycomm.TimeoutError, lambda: comm.allreduce(x, timeout=1.0), "rank 0", "rank 1",
           "not heard from in this op: rank 1 (last heard in #0)")
    took = time.monotonic() - t0
    assert 0.9 < took < 2.0, f"timeout after {took:.2f} s, asked for 1 s"


def abort(comm):
    # Rank 1 is late; rank 0's blocking op and the async ops queued behind it
    # are failed by comm.abort() from another thread, long before their timeout.
    import threading
    x = np.ones(1000, np.float32)
    if comm.rank == 1:
        time.sleep(1.5)
        # The abort reached this rank too: its next op fails, naming rank 0.
        expect(pycomm.CommError, lambda: comm.allreduce(x), "rank 0")
        return
    works = [comm.allreduce(np.ones(10, np.float32), async_op=True, timeout=60) for _ in range(3)]
    threading.Timer(0.3, lambda: comm.abort("stop the test")).start()
    t0 = time.monotonic()
    expect(pycomm.CommError, lambda: comm.allreduce(x, timeout=60), "stop the test")
    assert time.monotonic() - t0 < 3, "abort did not unblock the waiting op"
    for w in works:
        expect(pycomm.CommError, lambda: w.wait(timeout=5))
    assert all(w.is_completed() and w.exception() is not None for w in works)


def bad_input(comm):
    f32 = np.ones(8, np.float32)
    ro = np.ones(8, np.float32)
    ro.flags.writeable = False
    cases = [  # (exception, callable, what it tests)
        (TypeError, lambda: comm.allreduce([1.0, 2.0]), "a list"),
        (TypeError, lambda: comm.allreduce(np.ones(4, np.complex64)), "complex dtype"),
        (TypeError, lambda: comm.allreduce(np.ones(4, bool)), "bool dtype"),
        (TypeError, lambda: comm.allreduce(np.ones(4, np.uint16)), "uint16 dtype"),
        (ValueError, lambda: comm.allreduce(np.ones(16, np.float32)[::2]), "non-contiguous"),
        (ValueError, lambda: comm.allreduce(np.ones((4, 4), np.float32, order="F")), "Fortran order"),
        (ValueError, lambda: comm.allreduce(ro), "read-only in place"),
        (ValueError, lambda: comm.allreduce(f32, out=ro), "read-only out"),
        (ValueError, lambda: comm.allreduce(f32, out=np.empty(7, np.float32)), "out size"),
        (TypeError, lambda: comm.allreduce(f32, out=np.empty(8, np.float64)), "out dtype"),
        (ValueError, lambda: comm.allreduce(f32, op="bogus"), "unknown op"),
        (TypeError, lambda: comm.allreduce(f32, op=[]), "op type"),
        (ValueError, lambda: comm.allreduce(np.ones(4, np.int32), op="avg"), "avg on ints"),
        (ValueError, lambda: comm.allreduce(f32, timeout=-1), "negative timeout"),
        (ValueError, lambda: comm.allreduce(f32, timeout=0), "zero timeout"),
        (TypeError, lambda: comm.allreduce(f32, timeout="1"), "timeout type"),
        (ValueError, lambda: comm.reduce_scatter(np.ones(comm.size * 3 + 1, np.float32)), "rs size"),
        (ValueError, lambda: comm.reduce_scatter(np.ones(comm.size * 3, np.float32),
                                                 out=np.empty(4, np.float32)), "rs out size"),
        (ValueError, lambda: comm.allgather(f32, out=np.empty(3, np.float32)), "ag out size"),
        (TypeError, lambda: comm.allgather(f32, out=np.empty(8 * comm.size, np.int32)), "ag out dtype"),
        (ValueError, lambda: comm.broadcast(f32, root=comm.size), "root out of range"),
        (ValueError, lambda: comm.broadcast(f32, root=-1), "negative root"),
        (TypeError, lambda: comm.broadcast(f32, root="0"), "root type"),
        (ValueError, lambda: comm.broadcast(ro), "read-only broadcast"),
        (ValueError, lambda: comm.gather(f32, root=comm.size), "gather root out of range"),
        (TypeError, lambda: comm.reduce(f32, root=1.0), "reduce root type"),
        (ValueError, lambda: comm.gather(f32, root=0, out=np.empty(3, np.float32)) if comm.rank == 0
         else comm.gather(f32, root=-1), "gather out size"),
        (ValueError, lambda: comm.scatter(None, root=(comm.rank + 1) % comm.size), "scatter without out"),
        (ValueError, lambda: comm.scatter(np.ones(comm.size * 2 + 1, np.float32), root=comm.rank),
         "scatter x size"),
        (ValueError, lambda: comm.reduce(f32, root=comm.rank, out=np.empty(9, np.float32)), "reduce out size"),
        (ValueError, lambda: comm.reduce(np.ones(4, np.int32), root=0, op="avg"), "reduce avg on ints"),
        (ValueError, lambda: comm.alltoall(np.ones(comm.size * 2 + 1, np.float32)), "alltoall x size"),
        (ValueError, lambda: comm.alltoall(f32, out=f32), "alltoall in place"),
        (ValueError, lambda: comm.alltoall(np.ones(8 * comm.size, np.float32),
                                           out=np.ones(8 * comm.size, np.float32)[1:]), "alltoall out size"),
        (ValueError, lambda: comm.alltoall(f32, send_counts=[1] * comm.size), "alltoallv one list"),
        (ValueError, lambda: comm.alltoall(f32, send_counts=[1] * (comm.size + 1), recv_counts=[1] * comm.size),
         "alltoallv counts length"),
        (ValueError, lambda: comm.alltoall(f32, send_counts=[-1] + [1] * (comm.size - 1),
                                           recv_counts=[1] * comm.size), "alltoallv negative count"),
        (TypeError, lambda: comm.alltoall(f32, send_counts="abc", recv_counts=[1] * comm.size), "counts type"),
        (TypeError, lambda: comm.allgather(f32, counts=[1.5] * comm.size), "float counts"),
        (ValueError, lambda: comm.allgather(f32, counts=[3] * comm.size), "allgatherv x size"),
        (ValueError, lambda: comm.reduce_scatter(f32, counts=[8] * comm.size), "reduce_scatterv x size"),
        (ValueError, lambda: comm.reduce_scatter(f32, counts=[2] * comm.size, compress="int8"), "v and int8"),
    ]
    for exc, fn, what in cases:
        try:
            fn()
        except exc:
            pass
        except Exception as e:  # noqa: BLE001 - the point is to say which case broke
            raise AssertionError(f"{what}: expected {exc.__name__}, got {type(e).__name__}: {e}")
        else:
            raise AssertionError(f"{what}: expected {exc.__name__}, nothing raised")
    # Nothing was sent: the communicator still works.
    x = np.full(5, comm.rank + 1, np.float32)
    comm.allreduce(x)
    assert np.all(x == comm.size * (comm.size + 1) / 2), x
    comm.close()
    expect(ValueError, lambda: comm.allreduce(f32), "closed")


def main():
    comm = comm_from_env(timeout=60)
    globals()[sys.argv[1]](comm)
    comm.close()
    if comm.rank == 0:
        print(f"{sys.argv[1]} ok")


if __name__ == "__main__":
    main()
