"""The "pycomm" torch backend's point-to-point, all-to-all, rooted and
uneven collectives, object collectives and PREMUL_SUM, each result checked
against tensors every rank regenerates from the same seeds. argv[1:]:
scenarios (default all)."""
import sys
import warnings
import zlib

import torch
import torch.distributed as dist

import pycomm
import pycomm.torch  # noqa: F401  registers "pycomm"

R = dist.ReduceOp
warnings.filterwarnings("ignore", category=FutureWarning)
SEED = 19


def seeded(*key, n=5, dtype=torch.float32):
    g = torch.Generator().manual_seed(zlib.crc32(repr((SEED, *key)).encode()))  # the same in every process
    if dtype.is_floating_point:
        return torch.randn(n, generator=g).to(dtype)
    if dtype == torch.bool:
        return torch.randint(0, 2, (n,), generator=g).bool()
    if dtype.is_complex:
        return torch.complex(torch.randn(n, generator=g), torch.randn(n, generator=g)).to(dtype)
    return torch.randint(-100, 100, (n,), generator=g).to(dtype)


def check(got, want, what):
    assert got.dtype == want.dtype and got.shape == want.shape, f"{what}: {got.dtype}{tuple(got.shape)} " \
        f"vs {want.dtype}{tuple(want.shape)}"
    assert torch.equal(got, want), f"{what}: got {got.flatten()[:8]}, want {want.flatten()[:8]}"


def raises(exc, fn, *words):
    try:
        fn()
    except exc as e:
        for w in words:
            assert w in str(e), f"{w!r} not in {e}"
        return
    raise AssertionError(f"no {exc.__name__}")


def point_to_point(r, n):
    nxt, prv = (r + 1) % n, (r - 1) % n
    # Large blocking send/recv (16 MiB: what the store refused) and 256 MiB,
    # even ranks sending first.
    for nbytes in (16 << 20, 256 << 20):
        count = nbytes // 4
        out = torch.full((count,), float(r + 1))
        out[::4097] = torch.arange(0, count, 4097, dtype=torch.float32)
        got = torch.empty(count)
        if r % 2 == 0:
            dist.send(out, nxt)
            assert dist.recv(got, prv) == prv
        else:
            assert dist.recv(got, prv) == prv
            dist.send(out, nxt)
        want = torch.full((count,), float(prv + 1))
        want[::4097] = torch.arange(0, count, 4097, dtype=torch.float32)
        check(got, want, f"send/recv {nbytes} bytes")
        del out, got, want
    # Every dtype (moved as bytes where pycomm has no such dtype), tags,
    # a non-contiguous receive, irecv posted before isend on both sides.
    dtypes = [torch.float32, torch.bfloat16, torch.float64, torch.int16, torch.bool, torch.complex64, torch.uint8]
    recvs = []
    for i, dt in enumerate(dtypes):
        buf = torch.zeros(7, 3, dtype=dt).t()  # non-contiguous (3, 7)
        recvs.append((dt, buf, dist.irecv(buf, prv, tag=100 + i)))
    sends = [dist.isend(seeded(r, nxt, i, n=21, dtype=dt).reshape(3, 7), nxt, tag=100 + i)
             for i, dt in enumerate(dtypes)]
    for i, (dt, buf, w) in enumerate(recvs):
        w.wait()
        check(buf, seeded(prv, r, i, n=21, dtype=dt).reshape(3, 7), f"isend/irecv {dt}")
    for w in sends:
        assert w.wait() and w.is_completed()
    # Any source: rank 0 takes one message from every other rank.
    if r == 0:
        seen = set()
        for _ in range(n - 1):
            buf = torch.empty(4, dtype=torch.int64)
            w = dist.irecv(buf, tag=3)  # src None: any source (its own tag: later sends are on their way)
            w.wait()
            src = w._source_rank()
            check(buf, torch.arange(4) * src, "recv any source")
            seen.add(src)
        assert seen == set(range(1, n)), seen
    else:
        dist.send(torch.arange(4) * r, 0, tag=3)
    # batch_isend_irecv, 32 MiB per message, both directions of the ring.
    count = 8 << 20
    mine = torch.full((count,), float(r))
    ops = [dist.P2POp(dist.irecv, torch.empty(count), prv), dist.P2POp(dist.irecv, torch.empty(count), nxt),
           dist.P2POp(dist.isend, mine, nxt), dist.P2POp(dist.isend, mine, prv)]
    for w in dist.batch_isend_irecv(ops):
        w.wait()
    check(ops[0].tensor, torch.full((count,), float(prv)), "batch_isend_irecv from prev")
    check(ops[1].tensor, torch.full((count,), float(nxt)), "batch_isend_irecv from next")
    # The group's coalescing, as NCCL-style callers (torch >= 2.14) drive it.
    pg = dist.group.WORLD
    assert pg.supports_coalescing
    a, b = torch.empty(3), torch.empty(5, 2).t()
    pg._start_coalescing(torch.device("cpu"))
    dist.irecv(a, prv, tag=7)
    dist.irecv(b, nxt, tag=8)
    dist.isend(seeded(r, 1, n=3), nxt, tag=7)
    dist.isend(seeded(r, 2, n=10).reshape(2, 5), prv, tag=8)
    pg._end_coalescing(torch.device("cpu")).wait()
    check(a, seeded(prv, 1, n=3), "coalesced recv")
    check(b, seeded(nxt, 2, n=10).reshape(2, 5), "coalesced non-contiguous recv")
    # A receive of the wrong size fails on both ranks; the group goes on.
    if n >= 2 and r < 2:
        if r == 0:
            raises(pycomm.MismatchError, lambda: dist.send(torch.ones(100_000), 1, tag=9), "takes 40 bytes")
        else:
            raises(pycomm.MismatchError, lambda: dist.recv(torch.empty(10), 0, tag=9), "sent 400000 bytes")
    dist.barrier()


def rooted_and_uneven(r, n):
    for root in range(n):
        # reduce (SUM, MAX, AVG; bfloat16), gather, scatter.
        for op, dt in [(R.SUM, torch.float32), (R.MAX, torch.int32), (R.AVG, torch.float64)]:
            x = seeded(r, root, str(op), n=1000, dtype=dt)
            every = torch.stack([seeded(q, root, str(op), n=1000, dtype=dt) for q in range(n)])
            want = every.sum(0) if op == R.SUM else every.max(0).values if op == R.MAX else every.mean(0)
            dist.reduce(x, dst=root, op=op)
            if r == root:
                assert torch.allclose(x, want, rtol=1e-5, atol=1e-6), (op, x[:4], want[:4])
            else:
                check(x, seeded(r, root, str(op), n=1000, dtype=dt), "reduce leaves the input elsewhere")
        g = [torch.empty(3, 2, dtype=torch.bfloat16) for _ in range(n)] if r == root else None
        dist.gather(seeded(r, "g", n=6, dtype=torch.bfloat16).reshape(3, 2), g, dst=root)
        if r == root:
            for q in range(n):
                check(g[q], seeded(q, "g", n=6, dtype=torch.bfloat16).reshape(3, 2), "gather")
        s = torch.empty(4, dtype=torch.complex64)
        dist.scatter(s, [seeded(root, q, n=4, dtype=torch.complex64) for q in range(n)] if r == root else None,
                     src=root)
        check(s, seeded(root, r, n=4, dtype=torch.complex64), "scatter")
    # all_gather / reduce_scatter lists with unequal sizes (zeros included).
    sizes = [(q * 3) % 5 for q in range(n)]
    outs = [torch.empty(k, dtype=torch.int64) for k in sizes]
    dist.all_gather(outs, seeded(r, "ag", n=sizes[r], dtype=torch.int64))
    for q in range(n):
        check(outs[q], seeded(q, "ag", n=sizes[q], dtype=torch.int64), "all_gather uneven")
    ins = [seeded(r, "rs", q, n=sizes[q]) for q in range(n)]
    out = torch.empty(sizes[r])
    dist.reduce_scatter(out, ins)
    want = sum(seeded(q, "rs", r, n=sizes[r]) for q in range(n))
    assert torch.allclose(out, want, rtol=1e-5, atol=1e-6), "reduce_scatter uneven"


def all_to_all(r, n):
    # Even, then uneven token routing as an MoE layer does it: every rank
    # knows every rank's split sizes (they come from the same seed here;
    # a model exchanges them first).
    x = torch.arange(n * 6, dtype=torch.float32).reshape(n * 3, 2) + 1000 * r
    y = torch.empty_like(x)
    dist.all_to_all_single(y, x)
    want = torch.cat([(torch.arange(n * 6, dtype=torch.float32).reshape(n * 3, 2) + 1000 * q)[3 * r:3 * r + 3]
                      for q in range(n)])
    check(y, want, "all_to_all_single even")
    g = torch.Generator().manual_seed(SEED)
    splits = torch.randint(0, 5, (n, n), generator=g)  # splits[src][dst] rows
    splits[0, n - 1] = 0
    hidden = 3

    def tokens(src):
        return seeded(src, "tok", n=int(splits[src].sum()) * hidden).reshape(-1, hidden)

    x = tokens(r).requires_grad_()
    recv_rows = splits[:, r].tolist()
    y = torch.empty(sum(recv_rows), hidden)
    dist.all_to_all_single(y, x.detach(), recv_rows, splits[r].tolist())
    want = torch.cat([tokens(q)[int(splits[q, :r].sum()):int(splits[q, :r + 1].sum())] for q in range(n)])
    check(y, want, "all_to_all_single uneven")
    # Forward and backward through the differentiable functional form.
    from torch.distributed.nn.functional import all_to_all_single as a2a
    out = a2a(torch.empty(sum(recv_rows), hidden), x, recv_rows, splits[r].tolist())
    check(out.detach(), want, "functional all_to_all_single")
    (out * (r + 1)).sum().backward()
    # d/dx: each row sent to rank d comes back scaled by d + 1.
    scale = torch.cat([torch.full((int(k), hidden), float(d + 1)) for d, k in enumerate(splits[r].tolist())])
    check(x.grad, scale, "all_to_all_single backward")
    # The list form, unequal sizes.
    ins = [seeded(r, d, "l", n=int(splits[r, d])) for d in range(n)]
    outs = [torch.empty(int(splits[q, r])) for q in range(n)]
    dist.all_to_all(outs, ins)
    for q in range(n):
        check(outs[q], seeded(q, r, "l", n=int(splits[q, r])), "all_to_all list")
    dist.barrier()


def premul_sum(r, n):
    # FSDP2's reductions: AVG and PREMUL_SUM (scalar or tensor factor), fp32 and bf16.
    for dt in (torch.float32, torch.bfloat16):
        x = seeded(r, "ps", n=4 * n, dtype=dt)
        every = [seeded(q, "ps", n=4 * n, dtype=dt) for q in range(n)]
        for factor in (0.25, torch.tensor([0.5], dtype=dt)):
            op = dist._make_nccl_premul_sum(factor)
            out = torch.empty(4, dtype=dt)
            dist.reduce_scatter_tensor(out, x, op=op)
            f = factor if isinstance(factor, float) else factor
            want = sum((e * f).to(dt) for e in every)[4 * r:4 * r + 4]
            assert torch.allclose(out.float(), want.float(), rtol=2e-2, atol=1e-2), (dt, out, want)
            check(x, seeded(r, "ps", n=4 * n, dtype=dt), "reduce_scatter_tensor leaves its input")
            y = x.clone()
            dist.all_reduce(y, op=op)
            want = sum((e * f).to(dt) for e in every)
            assert torch.allclose(y.float(), want.float(), rtol=2e-2, atol=1e-2), (dt, y, want)
        out = torch.empty(4, dtype=dt)
        dist.reduce_scatter_tensor(out, x, op=R.AVG)
        want = (sum(e.float() for e in every) / n)[4 * r:4 * r + 4]
        assert torch.allclose(out.float(), want, rtol=2e-2, atol=1e-2), (dt, out, want)


def objects(r, n):
    objs = [None, None]
    if r == 0:
        for d in range(1, n):
            dist.send_object_list([{"to": d, "blob": b"x" * 100_000}, [d] * 3], dst=d)
    else:
        dist.recv_object_list(objs, src=0)
        assert objs == [{"to": r, "blob": b"x" * 100_000}, [r] * 3], objs
    lst = [f"from root {n}", 3.5] if r == 0 else [None, None]
    dist.broadcast_object_list(lst, src=0)
    assert lst == [f"from root {n}", 3.5]
    every = [None] * n
    dist.all_gather_object(every, ("rank", r, "x" * r))
    assert every == [("rank", q, "x" * q) for q in range(n)]
    got = [None] * n if r == n - 1 else None
    dist.gather_object({"r": r}, got, dst=n - 1)
    if r == n - 1:
        assert got == [{"r": q} for q in range(n)]
    mine = [None]
    dist.scatter_object_list(mine, [f"piece {q}" for q in range(n)] if r == 0 else None, src=0)
    assert mine == [f"piece {r}"]


SCENARIOS = [point_to_point, rooted_and_uneven, all_to_all, premul_sum, objects]


def main():
    dist.init_process_group("pycomm")
    r, n = dist.get_rank(), dist.get_world_size()
    names = sys.argv[1:] or [s.__name__ for s in SCENARIOS]
    for name in names:
        globals()[name](r, n)
    dist.barrier()
    dist.destroy_process_group()
    if r == 0:
        print(f"torch native ops ok on {n} ranks: {' '.join(names)}", flush=True)


if __name__ == "__main__":
    main()
