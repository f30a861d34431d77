"""torch.distributed's API over the "pycomm" backend, checked against values
every rank can compute. argv[1]: the init method ("env://" default, or
tcp://host:port, file:///path). PYCOMM_TORCH_OVERLAP=1: every allreduce,
however small, runs on pycomm's worker thread (the overlapped path)."""
import os
import re
import sys
import warnings
from datetime import timedelta

import torch
import torch.distributed as dist

import pycomm
import pycomm.torch  # noqa: F401  registers "pycomm"
from pycomm.torch import completion

R = dist.ReduceOp
warnings.filterwarnings("ignore", category=FutureWarning)  # torch 2.13 renamed some of the calls used here
if os.environ.get("PYCOMM_TORCH_OVERLAP") == "1":
    completion.OVERLAP_MIN_BYTES = 0


def full(v, n=5, dtype=torch.float32):
    return torch.full((n,), v, dtype=dtype)


def check(got, want, what):
    assert torch.equal(got, want), f"{what}: got {got}, want {want}"


def reductions(r, n):
    ranks = torch.arange(1, n + 1, dtype=torch.float64)
    for op, ref in [(R.SUM, ranks.sum()), (R.AVG, ranks.mean()), (R.PRODUCT, ranks.prod()),
                    (R.MIN, ranks.min()), (R.MAX, ranks.max())]:
        for dtype in (torch.float32, torch.float64, torch.bfloat16, torch.int32, torch.int64):
            if op == R.AVG and not dtype.is_floating_point:
                continue
            x = full(r + 1, dtype=dtype)
            dist.all_reduce(x, op=op)
            check(x, full(ref.item(), dtype=dtype), f"all_reduce {op} {dtype}")
    # Non-contiguous tensors: reduced in place through a contiguous copy.
    base = torch.arange(12.).reshape(3, 4)
    x = (base * (r + 1)).t()
    dist.all_reduce(x)
    check(x, base.t() * (n * (n + 1) / 2), "all_reduce of a transposed view")
    # Complex SUM, as pairs of reals (as gloo supports).
    c = torch.full((3,), complex(r, 1), dtype=torch.complex64)
    dist.all_reduce(c)
    check(c, torch.full((3,), complex(n * (n - 1) / 2, n), dtype=torch.complex64), "complex all_reduce")
    cs = [torch.full((2,), complex(1, r), dtype=torch.complex128), torch.full((3,), complex(r, 0), dtype=torch.complex128)]
    dist.all_reduce_coalesced(cs)
    check(cs[0], torch.full((2,), complex(n, n * (n - 1) / 2), dtype=torch.complex128), "complex coalesced")
    # bool: SUM is logical or, PRODUCT logical and (as gloo).
    b = torch.tensor([r == 0, False, True])
    dist.all_reduce(b)
    check(b, torch.tensor([True, False, True]), "bool all_reduce SUM")
    b = torch.tensor([r == 0, True])
    dist.all_reduce(b, op=R.PRODUCT)
    check(b, torch.tensor([n == 1, True]), "bool all_reduce PRODUCT")
    # Coalesced.
    ts = [full(r, 3), full(2 * r, 4)]
    dist.all_reduce_coalesced(ts)
    s = n * (n - 1) / 2
    check(ts[0], full(s, 3), "coalesced[0]"); check(ts[1], full(2 * s, 4), "coalesced[1]")
    # reduce: the root holds the sum; the others' inputs are untouched.
    root = n - 1
    x = full(r + 1.0)
    dist.reduce(x, dst=root)
    check(x, full(n * (n + 1) / 2 if r == root else r + 1.0), "reduce")
    # reduce_scatter, tensor and list forms.
    o = torch.empty(2)
    dist.reduce_scatter_tensor(o, torch.arange(2. * n) * (r + 1))
    check(o, torch.arange(2. * r, 2. * r + 2) * (n * (n + 1) / 2), "reduce_scatter_tensor")
    o = torch.empty(2, dtype=torch.int64)
    dist.reduce_scatter(o, [full(i + r, 2, torch.int64) for i in range(n)], op=R.MAX)
    check(o, full(r + n - 1, 2, torch.int64), "reduce_scatter list MAX")
    sparse(r, n)


def sparse(r, n):
    # Sparse COO SUM (as gloo): a different number of entries on every rank,
    # none on rank 1, overlapping indices, and a dense trailing dimension.
    def rank_tensor(q):
        k = 0 if q == 1 else q + 2
        idx = torch.tensor([[(3 * j + q) % 7 for j in range(k)], [j % 2 for j in range(k)]], dtype=torch.int64)
        vals = torch.arange(k * 3, dtype=torch.float64).reshape(k, 3) + q
        return torch.sparse_coo_tensor(idx.reshape(2, k), vals, (7, 2, 3))
    x = rank_tensor(r)
    dist.all_reduce(x)
    want = sum(rank_tensor(q).to_dense() for q in range(n))
    assert x.is_sparse, "sparse all_reduce must leave a sparse tensor"
    check(x.to_dense(), want, "sparse all_reduce")
    try:
        dist.all_reduce(rank_tensor(r), op=R.MAX)
    except ValueError as e:
        assert "SUM only" in str(e), e
    else:
        raise AssertionError("sparse all_reduce MAX must raise")


def movement(r, n):
    out = torch.empty(2 * n)
    dist.all_gather_into_tensor(out, full(float(r), 2))
    check(out, torch.arange(n, dtype=torch.float32).repeat_interleave(2), "all_gather_into_tensor")
    outs = [torch.empty(2, 3, dtype=torch.int16) for _ in range(n)]  # int16: moved as bytes
    dist.all_gather(outs, torch.full((2, 3), r, dtype=torch.int16))
    for i, o in enumerate(outs):
        check(o, torch.full((2, 3), i, dtype=torch.int16), "all_gather list int16")
    b = torch.tensor([r == 0, True])
    dist.broadcast(b, src=0)
    check(b, torch.tensor([True, True]), "broadcast bool")
    x = torch.arange(6.).reshape(2, 3).t() * (r + 1)  # non-contiguous
    dist.broadcast(x, src=n - 1)
    check(x, torch.arange(6.).reshape(2, 3).t() * n, "broadcast transposed view")
    g = [torch.empty(2) for _ in range(n)] if r == 0 else None
    dist.gather(full(float(r), 2), g, dst=0)
    if r == 0:
        for i, t in enumerate(g):
            check(t, full(float(i), 2), "gather")
    s = torch.empty(2)
    dist.scatter(s, [full(10. + i, 2) for i in range(n)] if r == 0 else None, src=0)
    check(s, full(10. + r, 2), "scatter")
    # all_to_all_single, even and uneven splits.
    a = torch.empty(n)
    dist.all_to_all_single(a, torch.arange(n, dtype=torch.float32) + 10 * r)
    check(a, torch.arange(n, dtype=torch.float32) * 10 + r, "all_to_all_single")
    in_splits = [r + 1] * n                 # rank r sends r+1 rows to everyone
    out_splits = [s + 1 for s in range(n)]  # and receives s+1 rows from rank s
    x = torch.full((sum(in_splits), 2), float(r))
    y = torch.empty(sum(out_splits), 2)
    dist.all_to_all_single(y, x, out_splits, in_splits)
    check(y, torch.cat([torch.full((s + 1, 2), float(s)) for s in range(n)]), "all_to_all_single uneven")
    outs = [torch.empty(1) for _ in range(n)]
    dist.all_to_all(outs, [torch.tensor([100. * r + d]) for d in range(n)])
    check(torch.cat(outs), torch.tensor([100. * s + r for s in range(n)]), "all_to_all list")
    objs = [None] * n
    dist.all_gather_object(objs, {"rank": r})
    assert objs == [{"rank": i} for i in range(n)], objs
    lst = [r] if r == 0 else [None]
    dist.broadcast_object_list(lst, src=0)
    assert lst == [0]


def point_to_point(r, n):
    nxt, prv = (r + 1) % n, (r - 1) % n
    ops = [dist.P2POp(dist.irecv, torch.empty(3), prv), dist.P2POp(dist.isend, full(float(r), 3), nxt)]
    for w in dist.batch_isend_irecv(ops):
        w.wait()
    check(ops[0].tensor, full(float(prv), 3), "batch_isend_irecv ring")
    if r == 0:
        for d in range(1, n):
            dist.send(torch.arange(4, dtype=torch.int64) * d, d)
    else:
        t = torch.empty(4, dtype=torch.int64)
        dist.recv(t, 0)
        check(t, torch.arange(4, dtype=torch.int64) * r, "send/recv")


def async_and_errors(r, n):
    x = full(1.0)
    w = dist.all_reduce(x, async_op=True)
    assert w.wait() and w.is_completed() and w.is_success()
    fut = w.get_future()
    check(fut.wait()[0], full(float(n)), "future value")
    chained = dist.all_reduce(full(1.0), async_op=True).get_future().then(lambda f: f.value()[0] * 2)
    check(chained.wait(), full(2.0 * n), "future then")
    # Several all_reduces in flight, then blocking ops of other kinds: all done in submission order.
    xs = [full(float(k + r), n=1000 + k) for k in range(4)]
    works = [dist.all_reduce(t, async_op=True) for t in xs]
    b = full(float(r))
    dist.broadcast(b, src=n - 1)
    m = full(float(r))
    dist.all_reduce(m, op=R.MAX)
    for k, (t, w) in enumerate(zip(xs, works)):
        assert w.wait()
        check(t, full(float(n * k + n * (n - 1) // 2), n=1000 + k), f"all_reduce {k} in flight")
    check(b, full(float(n - 1)), "broadcast behind all_reduces in flight")
    check(m, full(float(n - 1)), "MAX behind all_reduces in flight")
    # A failure inside pycomm (ranks call different collectives) reaches the
    # caller from wait() and through the future, on a group of its own.
    bad = dist.new_group(backend="pycomm")
    w = dist.all_reduce(full(1.0, n=4 + r), group=bad, async_op=True)
    try:
        w.wait()
    except pycomm.CommError as e:
        assert "rank" in str(e), e
    else:
        raise AssertionError("mismatched all_reduce did not fail")
    try:
        w.get_future().wait()
    except Exception as e:  # noqa: BLE001
        assert "rank" in str(e), e
    else:
        raise AssertionError("the future of a failed op did not fail")
    try:
        dist.all_reduce(full(1.0), group=bad)
    except pycomm.CommError:
        pass
    else:
        raise AssertionError("a failed communicator accepted another op")
    # Argument errors are raised before anything is sent.
    try:
        dist.all_reduce(torch.ones(2), op=R.BAND)
    except (ValueError, RuntimeError):
        pass
    else:
        raise AssertionError("BAND accepted")
    dist.barrier()


def groups(r, n):
    sub = dist.new_group(list(range(n)), backend="pycomm")
    y = torch.ones(2)
    dist.all_reduce(y, group=sub)
    check(y, full(float(n), 2), "new_group all_reduce")
    assert sub.group_name != dist.group.WORLD.group_name
    if n > 2:
        pair = dist.new_group([0, 1], backend="pycomm")
        if r < 2:
            z = torch.full((2,), float(r))
            dist.all_reduce(z, group=pair)
            check(z, full(1.0, 2), "two-rank group")


def _raises(fn, pattern, what):
    try:
        fn()
    except pycomm.CommError as e:
        assert re.search(pattern, str(e)), f"{what}: {e}"
    else:
        raise AssertionError(f"{what}: no error")


def monitored(r, n):
    """monitored_barrier: passes when every rank comes; rank 0 names the
    missing ranks; each failure case on a group of its own (a rank that
    skipped a call is a call behind on that group from then on)."""
    pg = dist.group.WORLD
    assert torch.device("cpu") in pg._device_types
    pg.monitored_barrier(timedelta(seconds=30))
    pg.monitored_barrier(30.0, wait_all_ranks=True)
    if tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 14):
        dist.monitored_barrier(timeout=timedelta(seconds=30))  # earlier torch lets only gloo's groups in
    one_missing, all_missing, rank0_late = (dist.new_group(backend="pycomm") for _ in range(3))
    if r == 0:
        _raises(lambda: one_missing.monitored_barrier(timedelta(seconds=0.5)),
                rf"^Rank {n - 1} failed to pass monitoredBarrier in 500 ms", "one rank missing")
        ranks = ", ".join(str(k) for k in range(1, n))
        _raises(lambda: all_missing.monitored_barrier(timedelta(seconds=0.3), wait_all_ranks=True),
                rf"^Ranks {ranks} failed to pass monitoredBarrier in 300 ms", "wait_all_ranks")
        _raises(lambda: rank0_late.monitored_barrier(0), r"^Rank 0 timed out in monitoredBarrier", "timeout 0")
        try:
            pg.monitored_barrier(-1)
        except ValueError:
            pass
        else:
            raise AssertionError("a negative timeout was accepted")
    elif r != n - 1:
        _raises(lambda: one_missing.monitored_barrier(timedelta(seconds=2)),
                rf"^Rank {r} successfully reached monitoredBarrier, but received errors .* from rank 0",
                "released by no one")
    dist.barrier()


def main():
    init = sys.argv[1] if len(sys.argv) > 1 else "env://"
    kw = {}
    if init != "env://":
        import os
        kw = {"rank": int(os.environ["RANK"]), "world_size": int(os.environ["WORLD_SIZE"])}
    dist.init_process_group("pycomm", init_method=init, **kw)
    r, n = dist.get_rank(), dist.get_world_size()
    assert dist.get_backend() == "pycomm" and isinstance(dist.group.WORLD, pycomm.torch.ProcessGroupPycomm)
    reductions(r, n)
    movement(r, n)
    if init == "env://":
        point_to_point(r, n)
        async_and_errors(r, n)
        groups(r, n)
        monitored(r, n)
    dist.barrier()
    dist.destroy_process_group()
    if r == 0:
        print("torch backend ok", init)


if __name__ == "__main__":
    main()
