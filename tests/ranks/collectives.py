"""Every collective x dtype x op x count, in place and out of place, checked
against a float64 numpy reference and for bitwise identity across ranks.
Exit status non-zero on the first wrong result."""
import sys

import numpy as np

import pycomm
from common import (DTYPES, FLOATS, check_close, check_identical, comm_from_env, log, make_input,
                    reference)

SEED = 1234


def ops_for(dtype):
    return ["sum", "prod", "min", "max"] + (["avg"] if dtype in FLOATS else [])


def check_allreduce(comm, count, dtype, op):
    n, r = comm.size, comm.rank
    inputs = [make_input(SEED, p, count, dtype, op) for p in range(n)]
    ref = reference(inputs, op, dtype)
    what = f"allreduce {dtype} {op} count={count}"
    x = inputs[r].copy()
    out = np.empty_like(x)
    assert comm.allreduce(x, op=op, out=out) is out
    assert np.array_equal(x, inputs[r]), what + ": input modified"
    check_close(out, ref, dtype, what + " (out of place)")
    check_identical(comm, out, what)
    comm.allreduce(x, op=op)
    assert np.array_equal(x, out), what + ": in place differs from out of place"


def check_reduce_scatter(comm, count, dtype, op):
    n, r = comm.size, comm.rank
    inputs = [make_input(SEED + 1, p, count * n, dtype, op) for p in range(n)]
    ref = reference(inputs, op, dtype)[r * count:(r + 1) * count]
    what = f"reduce_scatter {dtype} {op} count={count}"
    out = comm.reduce_scatter(inputs[r].copy(), op=op)
    assert out.size == count
    check_close(out, ref, dtype, what)
    check_identical(comm, comm.allgather(out), what)
    x = inputs[r].copy()  # in place: out is this rank's block of x
    comm.reduce_scatter(x, op=op, out=x[r * count:(r + 1) * count])
    assert np.array_equal(x[r * count:(r + 1) * count], out), what + ": in place differs"


def check_allgather(comm, count, dtype):
    n, r = comm.size, comm.rank
    inputs = [make_input(SEED + 2, p, count, dtype, "sum") for p in range(n)]
    want = np.concatenate(inputs) if count else np.empty(0, dtype)
    what = f"allgather {dtype} count={count}"
    got = comm.allgather(inputs[r])
    assert got.dtype == np.dtype(dtype) and np.array_equal(got, want), what
    out = np.zeros(n * count, dtype)  # in place: x is this rank's block of out
    out[r * count:(r + 1) * count] = inputs[r]
    comm.allgather(out[r * count:(r + 1) * count], out=out)
    assert np.array_equal(out, want), what + " (in place)"


def check_broadcast(comm, count, dtype, root):
    what = f"broadcast {dtype} count={count} root={root}"
    want = make_input(SEED + 3, root, count, dtype, "sum")
    x = want.copy() if comm.rank == root else np.zeros(count, dtype)
    assert comm.broadcast(x, root=root) is x
    assert np.array_equal(x, want), what


def check_gather(comm, count, dtype, root):
    n, r = comm.size, comm.rank
    inputs = [make_input(SEED + 5, p, count, dtype, "sum") for p in range(n)]
    want = np.concatenate(inputs)
    what = f"gather {dtype} count={count} root={root}"
    got = comm.gather(inputs[r], root=root)
    if r != root:
        assert got is None, what + ": a non-root got a result"
    else:
        assert got.dtype == np.dtype(dtype) and np.array_equal(got, want), what
        out = np.zeros(n * count, dtype)  # in place at the root: x is its block of out
        out[r * count:(r + 1) * count] = inputs[r]
        comm.gather(out[r * count:(r + 1) * count], root=root, out=out)
        assert np.array_equal(out, want), what + " (in place)"
    if r != root:
        comm.gather(inputs[r], root=root)


def check_scatter(comm, count, dtype, root):
    n, r = comm.size, comm.rank
    whole = make_input(SEED + 6, root, n * count, dtype, "sum")
    what = f"scatter {dtype} count={count} root={root}"
    out = np.full(count, 7, dtype)
    assert comm.scatter(whole if r == root else None, root=root, out=out) is out
    assert np.array_equal(out, whole[r * count:(r + 1) * count]), what
    if r == root:  # the root may leave out None; in place: out is its block of x
        assert np.array_equal(comm.scatter(whole, root=root), out), what + " (allocated)"
        x = whole.copy()
        comm.scatter(x, root=root, out=x[r * count:(r + 1) * count])
        assert np.array_equal(x, whole), what + " (in place)"
    else:
        comm.scatter(None, root=root, out=np.empty(count, dtype))
        comm.scatter(None, root=root, out=np.empty(count, dtype))


def check_reduce(comm, count, dtype, op, root):
    n, r = comm.size, comm.rank
    inputs = [make_input(SEED + 7, p, count, dtype, op) for p in range(n)]
    ref = reference(inputs, op, dtype)
    what = f"reduce {dtype} {op} count={count} root={root}"
    x = inputs[r].copy()
    out = np.empty_like(x)
    got = comm.reduce(x, root=root, op=op, out=out)
    assert np.array_equal(x, inputs[r]), what + ": input modified"
    if r == root:
        assert got is out
        check_close(out, ref, dtype, what)
    else:
        assert got is None, what + ": a non-root got a result"
    comm.reduce(x, root=root, op=op)  # in place at the root
    if r == root:
        assert np.array_equal(x, out), what + ": in place differs from out of place"


def check_alltoall(comm, count, dtype):
    n, r = comm.size, comm.rank
    inputs = [make_input(SEED + 8, p, n * count, dtype, "sum") for p in range(n)]
    want = np.concatenate([inputs[p][r * count:(r + 1) * count] for p in range(n)])
    what = f"alltoall {dtype} count={count}"
    got = comm.alltoall(inputs[r])
    assert got.dtype == np.dtype(dtype) and np.array_equal(got, want), what


def uneven(n, salt):
    """Per-rank counts with zeros, a rank with many more than the others, and
    fewer elements in all than ranks for some salts."""
    return [((p * 7 + salt * 3) % 5) * (salt % 4) + (37 if (p + salt) % n == 0 and salt % 3 == 0 else 0)
            for p in range(n)]


def check_allgatherv(comm, dtype, salt):
    n, r = comm.size, comm.rank
    counts = uneven(n, salt)
    inputs = [make_input(SEED + 9, p, counts[p], dtype, "sum") for p in range(n)]
    what = f"allgatherv {dtype} counts={counts}"
    got = comm.allgather(inputs[r], counts=counts)
    assert np.array_equal(got, np.concatenate(inputs)), what
    check_identical(comm, got, what)


def check_reduce_scatterv(comm, dtype, op, salt):
    n, r = comm.size, comm.rank
    counts = uneven(n, salt)
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(int)
    inputs = [make_input(SEED + 10, p, int(starts[-1]), dtype, op) for p in range(n)]
    ref = reference(inputs, op, dtype)[starts[r]:starts[r + 1]]
    what = f"reduce_scatterv {dtype} {op} counts={counts}"
    got = comm.reduce_scatter(inputs[r], op=op, counts=counts)
    assert got.size == counts[r], what
    check_close(got, ref, dtype, what)
    x = inputs[r].copy()  # in place: out is this rank's block of x
    comm.reduce_scatter(x, op=op, out=x[starts[r]:starts[r + 1]], counts=counts)
    assert np.array_equal(x[starts[r]:starts[r + 1]], got), what + ": in place differs"


def check_alltoallv(comm, dtype, salt):
    n, r = comm.size, comm.rank
    sends = [uneven(n, salt + p) for p in range(n)]  # sends[p][q]: elements p sends q
    inputs = [make_input(SEED + 11, p, sum(sends[p]), dtype, "sum") for p in range(n)]

    def block(p, q):
        start = sum(sends[p][:q])
        return inputs[p][start:start + sends[p][q]]

    recv = [sends[p][r] for p in range(n)]
    want = np.concatenate([block(p, r) for p in range(n)])
    what = f"alltoallv {dtype} send={sends[r]} recv={recv}"
    got = comm.alltoall(inputs[r], send_counts=sends[r], recv_counts=recv)
    assert got.size == sum(recv) and np.array_equal(got, want), what


def memory_of(a, readonly=False):
    """pycomm.Memory over numpy array a (kept alive with it)."""
    return pycomm.Memory(a.ctypes.data, a.size, a.dtype.name, readonly=readonly, keep=a)


def check_memory(comm, count, dtype):
    """Buffers given by address (pycomm.Memory): the fast allreduce, the
    general path (async_op), and another collective, against numpy."""
    n, r = comm.size, comm.rank
    what = f"Memory {dtype} count={count}"
    inputs = [make_input(SEED + 5, p, count, dtype, "sum") for p in range(n)]
    ref = reference(inputs, "sum", dtype)
    x, out = inputs[r].copy(), np.empty(count, dtype)
    assert comm.allreduce(memory_of(x, readonly=True), out=memory_of(out)).address == out.ctypes.data
    check_close(out, ref, dtype, what + " (out of place)")
    check_identical(comm, out, what)
    comm.allreduce(memory_of(x), async_op=True).wait()  # in place, through the Python method
    assert np.array_equal(x, out), what + ": in place differs from out of place"
    got = np.empty(n * count, dtype)
    comm.allgather(memory_of(inputs[r], readonly=True), out=memory_of(got))
    assert np.array_equal(got, np.concatenate(inputs)), what + ": allgather"


def check_torch(comm):
    try:
        import torch
    except ImportError:
        log(comm, "torch not installed: skipping the DLPack / bfloat16 cases")
        return
    n, r = comm.size, comm.rank
    for dtype, count in (("bfloat16", 1001), ("bfloat16", 70001), ("float32", 4097)):
        inputs = [make_input(SEED + 4, p, count, dtype, "sum") for p in range(n)]
        t = torch.from_numpy(inputs[r]).to(getattr(torch, dtype))
        ref = reference([torch.from_numpy(i).to(getattr(torch, dtype)).float().numpy() for i in inputs],
                        "sum", dtype)
        comm.allreduce(t)
        check_close(t.float().numpy(), ref, dtype, f"torch {dtype} allreduce count={count}")
        check_identical(comm, t.view(torch.int16).numpy() if dtype == "bfloat16" else t.numpy(), f"torch {dtype} {count}")
        g = comm.allgather(t)
        assert isinstance(g, torch.Tensor) and g.dtype == t.dtype and g.numel() == n * count
        # The same through the tensor's address (what the torch backend passes).
        # (float32: inputs[r] was t's memory and holds the sum now)
        t = torch.from_numpy(make_input(SEED + 4, r, count, dtype, "sum")).to(getattr(torch, dtype))
        comm.allreduce(pycomm.Memory(t.data_ptr(), t.numel(), dtype))
        check_close(t.float().numpy(), ref, dtype, f"Memory of a torch {dtype} tensor, count={count}")


def run_all(comm, counts=None):
    """Every collective x dtype x op x count on `comm` (also used by tests/mpi)."""
    n = comm.size
    counts = counts or [0, 1, max(n - 1, 1), 7, 1001, 65537]
    for dtype in DTYPES:
        for count in counts:
            for op in ops_for(dtype):
                check_allreduce(comm, count, dtype, op)
                check_reduce_scatter(comm, count, dtype, op)
            check_allgather(comm, count, dtype)
            check_broadcast(comm, count, dtype, root=count % n)
            check_gather(comm, count, dtype, root=(count + 1) % n)
            check_scatter(comm, count, dtype, root=count % n)
            check_alltoall(comm, count, dtype)
            check_memory(comm, count, dtype)
            for op in ops_for(dtype)[:3] if count > 1000 else ops_for(dtype):
                check_reduce(comm, count, dtype, op, root=(count + 2) % n)
        for salt in range(6):
            check_allgatherv(comm, dtype, salt)
            check_alltoallv(comm, dtype, salt)
            check_reduce_scatterv(comm, dtype, ops_for(dtype)[salt % len(ops_for(dtype))], salt)
        comm.barrier()
    # Large payloads: several ring slices and wrap-arounds of the transport buffers.
    big = 1_048_579  # > 4 MiB of float32, odd
    for dtype, op in (("float32", "sum"), ("float64", "avg"), ("int32", "max"), ("float16", "sum")):
        check_allreduce(comm, big, dtype, op)
    check_reduce_scatter(comm, big // n, "float32", "sum")
    check_allgather(comm, big // n, "int64")
    check_broadcast(comm, big, "float32", root=n - 1)
    check_reduce(comm, big, "float32", "sum", root=n - 1)  # the chain, several ring wraps
    check_reduce(comm, big, "float64", "avg", root=0)
    check_gather(comm, big // n, "float32", root=0)
    check_scatter(comm, big // n, "int32", root=n - 1)
    check_alltoall(comm, big // n // n + 1, "float32")
    check_alltoall(comm, (4 << 20) // 4 + 3, "float32")  # each rank's own block of 4 MiB and more: streamed
    check_torch(comm)


def main():
    counts = [int(c) for c in sys.argv[1].split(",")] if len(sys.argv) > 1 else None
    with comm_from_env(timeout=120) as comm:
        run_all(comm, counts)
        log(comm, f"collectives ok on {comm.size} ranks over {comm.transport}")


if __name__ == "__main__":
    main()
