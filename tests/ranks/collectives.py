"""Every collective x dtype x op x count, in place and out of place, checked
against a float64 numpy reference and for bitwise identity across ranks.
Exit status non-zero on the first wrong result."""
import sys

import numpy as np

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
        comm.barrier()
    # Large payloads: several ring slices and wrap-arounds of the transport buffers.
    big = 1_048_579  # > 4 MiB of float32, odd
    for dtype, op in (("float32", "sum"), ("float64", "avg"), ("int32", "max"), ("float16", "sum")):
        check_allreduce(comm, big, dtype, op)
    check_reduce_scatter(comm, big // n, "float32", "sum")
    check_allgather(comm, big // n, "int64")
    check_broadcast(comm, big, "float32", root=n - 1)
    check_torch(comm)


def main():
    counts = [int(c) for c in sys.argv[1].split(",")] if len(sys.argv) > 1 else None
    with comm_from_env(timeout=120) as comm:
        run_all(comm, counts)
        log(comm, f"collectives ok on {comm.size} ranks over {comm.transport}")


if __name__ == "__main__":
    main()
