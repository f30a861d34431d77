"""Every collective on torch CUDA tensors (all ranks may share one GPU: CUDA
IPC), checked against float64 numpy references and for bitwise identity
across ranks; in place and out of place, async, the caller's stream order,
views at offsets into one allocation, tensors seen only through DLPack.
Exit status non-zero on the first wrong result."""
import sys

import numpy as np
import torch

import pycomm

from common import FLOATS, check_close, check_identical, comm_from_env, log, make_input, reference

SEED = 777
DTYPES = ["float32", "float16", "bfloat16", "int32", "float64"]
COUNTS = [0, 1, 5, 1000, 100003]


def gpu(array, dtype):
    t = torch.from_numpy(np.ascontiguousarray(array))
    return t.to(device="cuda", dtype=getattr(torch, dtype))


def host(t):
    return t.float().cpu().numpy() if t.dtype == torch.bfloat16 else t.cpu().numpy()


def ops_for(dtype):
    return ["sum", "max"] + (["avg"] if dtype in FLOATS else ["prod", "min"])


def check_all(comm, count, dtype):
    n, r = comm.size, comm.rank
    for op in ops_for(dtype):
        inputs = [make_input(SEED, p, count, dtype if dtype != "bfloat16" else "float32", op)
                  for p in range(n)]
        if dtype == "bfloat16":  # inputs exactly representable in bfloat16
            inputs = [host(gpu(x, "bfloat16")) for x in inputs]
        ref = reference(inputs, op, dtype)
        what = f"cuda allreduce {dtype} {op} count={count}"
        x = gpu(inputs[r], dtype)
        out = torch.empty_like(x)
        assert comm.allreduce(x, op=op, out=out) is out
        check_close(host(out), ref, dtype, what)
        check_identical(comm, host(out), what)
        comm.allreduce(x, op=op)
        assert torch.equal(x, out), what + ": in place differs"

    inputs = [make_input(SEED + 1, p, count * n, "float32", "sum") for p in range(n)]
    inputs = [host(gpu(x, dtype)).astype(np.float64 if dtype != "int32" else np.int64) for x in inputs]
    ref = reference(inputs, "sum", dtype)[r * count:(r + 1) * count]
    got = comm.reduce_scatter(gpu(inputs[r], dtype))
    check_close(host(got), ref, dtype, f"cuda reduce_scatter {dtype} count={count}")
    x = gpu(inputs[r], dtype)
    comm.reduce_scatter(x, out=x[r * count:(r + 1) * count])
    assert torch.equal(x[r * count:(r + 1) * count], got), "cuda reduce_scatter in place differs"

    parts = [gpu(make_input(SEED + 2, p, count, "float32", "sum"), dtype) for p in range(n)]
    got = comm.allgather(parts[r])
    assert torch.equal(got, torch.cat(parts)), f"cuda allgather {dtype} count={count}"

    for root in {0, n - 1}:
        x = parts[r].clone()
        comm.broadcast(x, root=root)
        assert torch.equal(x, parts[root]), f"cuda broadcast {dtype} count={count} root={root}"


def check_rooted_alltoall_p2p(comm, count, dtype):
    """gather, scatter, reduce, alltoall(v), allgather/reduce_scatter with
    counts, and point-to-point on CUDA tensors, against the same on the host."""
    n, r = comm.size, comm.rank
    parts = [gpu(make_input(SEED + 3, p, count * n, "float32", "sum"), dtype) for p in range(n)]
    for root in {0, n - 1}:
        got = comm.gather(parts[r][:count], root=root)
        if r == root:
            assert torch.equal(got, torch.cat([p[:count] for p in parts])), f"cuda gather {dtype} {count}"
        out = torch.empty(count, dtype=parts[0].dtype, device="cuda")
        comm.scatter(parts[root] if r == root else None, root=root, out=out)
        assert torch.equal(out, parts[root][r * count:(r + 1) * count]), f"cuda scatter {dtype} {count}"
        x = parts[r].clone()
        comm.reduce(x, root=root, op="max")
        if r == root:
            assert torch.equal(x, torch.stack(parts).max(0).values), f"cuda reduce max {dtype} {count}"
    y = torch.empty_like(parts[r])
    comm.alltoall(parts[r], out=y)
    assert torch.equal(y, torch.cat([p[r * count:(r + 1) * count] for p in parts])), f"cuda alltoall {dtype}"
    counts = [(q * 7 + count) % 11 for q in range(n)]
    mine = parts[r][:counts[r]]
    got = comm.allgather(mine, counts=counts)
    assert torch.equal(got, torch.cat([p[:k] for p, k in zip(parts, counts)])), f"cuda allgatherv {dtype}"
    # Point-to-point: a ring both ways, blocking and not, into a view at an offset.
    nxt, prv = (r + 1) % n, (r - 1) % n
    buf = torch.zeros(count * n + 3, dtype=parts[0].dtype, device="cuda")
    w = comm.irecv(buf[3:], prv, tag=4)
    comm.send(parts[r], nxt, tag=4)
    w.wait()
    assert w.source == prv and torch.equal(buf[3:], parts[prv]) and not buf[:3].any(), f"cuda p2p {dtype} {count}"
    with comm.group():
        a = comm.irecv(buf[3:], nxt, tag=5)
        comm.isend(parts[r], prv, tag=5)
    a.wait()
    assert torch.equal(buf[3:], parts[nxt]), f"cuda p2p group {dtype} {count}"


def check_int8(comm):
    """The compressed allreduce on GPU buffers: exactly the CPU kernels' result
    (tests/ranks/compressed.py simulates it in one process), on every rank."""
    import compressed
    n, r = comm.size, comm.rank
    for dtype in ("float32", "float16", "bfloat16"):
        for count in (0, 5, 1000, 100003):
            for op in ("sum", "avg"):
                xs = compressed.inputs(n, count, dtype)
                if dtype == "bfloat16":
                    xs = [compressed.as_torch(x, dtype) for x in xs]
                want = compressed.simulate_allreduce(xs, op, 64)
                x = torch.as_tensor(xs[r]).to(device="cuda", dtype=getattr(torch, dtype))
                got = comm.allreduce(x, op=op, compress="int8")
                assert got.dtype == torch.float32 and (dtype != "float32" or got is x)
                got = got.cpu().numpy()
                what = f"cuda int8 allreduce {dtype} {op} count={count}"
                assert np.array_equal(got.view(np.int32), want.view(np.int32)), what + ": not the CPU's bytes"
                check_identical(comm, got, what)
    # Error feedback with the residuals on the GPU: results and residuals are
    # the CPU simulation's, step after step.
    count = 3001
    ef = pycomm.ErrorFeedback()
    worker = [np.zeros(count, np.float32) for _ in range(n)]
    owner = np.zeros(count, np.float32)
    lo, hi = compressed.owner_slices(count, n, 64)[r]
    for step in range(3):
        xs = compressed.inputs(n, count, "float32", step=step + 1)
        want = compressed.simulate_allreduce(xs, "sum", 64, worker, owner)
        got = comm.allreduce(torch.from_numpy(xs[r]).cuda(), compress="int8", error_feedback=ef)
        assert np.array_equal(got.cpu().numpy(), want), f"cuda int8 error feedback step {step}"
        assert ef.worker.is_cuda and np.array_equal(ef.worker.cpu().numpy(), worker[r])
        assert np.array_equal(ef.owner.cpu().numpy(), owner[lo:hi]), f"owner residual step {step}"
    state = ef.state_dict()
    assert isinstance(state["worker"], np.ndarray) and state["layout"]["device"] == "cuda:0"
    x = torch.randn(5000, device="cuda", generator=None)
    a = comm.allreduce(x.clone(), compress="int8", stochastic=True, seed=3)
    b = comm.allreduce(x.clone(), compress="int8", stochastic=True, seed=3)
    assert torch.equal(a, b), "stochastic rounding on GPU is not reproducible"


def check_streams_and_async(comm):
    n, r = comm.size, comm.rank
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        x = torch.full((1 << 20,), float(r + 1), device="cuda")
        x.mul_(2)  # queued on `side`: the allreduce must wait for it
        comm.allreduce(x)
        y = x + 0  # and see its result, on the same stream
    side.synchronize()
    assert torch.all(y == float(n * (n + 1))), "the allreduce did not follow the caller's stream"
    works = [comm.allreduce(torch.full((999,), float(i), device="cuda"), async_op=True) for i in range(5)]
    for w in works:
        w.wait()
    x = torch.arange(10, device="cuda", dtype=torch.float32)
    w = comm.allreduce(x, async_op=True)
    w.wait()
    assert torch.equal(x, torch.arange(10, device="cuda", dtype=torch.float32) * n)
    # Mixed host and GPU buffers are refused before anything is sent.
    try:
        comm.allreduce(torch.zeros(4, device="cuda"), out=np.zeros(4, np.float32))
    except TypeError:
        pass
    else:
        raise AssertionError("a GPU x with a host out was accepted")
    comm.barrier()


class DLPackOnly:
    """A torch CUDA tensor seen only through DLPack, as JAX or TensorFlow
    arrays are (no data_ptr, no __cuda_array_interface__)."""

    def __init__(self, t):
        self.t = t

    def __dlpack_device__(self):
        return self.t.__dlpack_device__()

    def __dlpack__(self, stream=None):
        return self.t.__dlpack__(stream=stream)


def check_dlpack(comm):
    n, r = comm.size, comm.rank
    x = torch.full((1001,), float(r + 1), device="cuda")
    wrapped = DLPackOnly(x)
    assert comm.allreduce(wrapped) is wrapped
    assert torch.all(x == n * (n + 1) / 2), "allreduce through DLPack"
    out = torch.empty(1001 * n, device="cuda")
    comm.allgather(DLPackOnly(x), out=DLPackOnly(out))
    assert torch.equal(out, x.repeat(n)), "allgather through DLPack"
    y = torch.randn(5000, device="cuda", generator=torch.Generator("cuda").manual_seed(r))
    want = comm.allreduce(y.clone(), compress="int8")
    comm.allreduce(DLPackOnly(y), compress="int8")
    assert torch.equal(y, want), "int8 allreduce through DLPack"


def main():
    torch.cuda.set_device(0)
    staged = sys.argv[1:] == ["staged"]
    # "staged": as if every rank were on a host of its own (pinned host staging).
    opts = {"local_ranks": 1} if staged else {}
    comm = comm_from_env(options=opts)
    for dtype in DTYPES:
        for count in COUNTS:
            check_all(comm, count, dtype)
            check_rooted_alltoall_p2p(comm, count, dtype)
    check_streams_and_async(comm)
    check_dlpack(comm)
    check_int8(comm)  # staged: the host's compressed allreduce on pinned copies
    log(comm, f"path: {comm.device_path}")
    # Views into one allocation at odd offsets, and a second communicator side by side.
    other = comm_from_env(options=opts)
    big = torch.zeros(3 * 10007 + 5, device="cuda")
    for c in (comm, other):
        view = big[5:5 + 10007]
        view.fill_(float(comm.rank + 1))
        c.allreduce(view)
        assert torch.all(view == comm.size * (comm.size + 1) / 2) and torch.all(big[:5] == 0), "offset view"
    other.close()
    comm.close()
    log(comm, f"cuda collectives ok on {comm.size} ranks")


if __name__ == "__main__":
    sys.exit(main())
