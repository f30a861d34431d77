"""Compressed (int8) allreduce, reduce-scatter and allgather on real ranks.

Deterministic rounding makes the result exactly predictable from the kernels
alone: the owner's sum is block-wise, so quantize every rank's input,
reduce-requantize, dequantize in one process (pycomm's own kernels) and the
ranks must hold exactly those bytes, whatever the slicing and the rounds.
Also: error vs the float64 reference, bitwise identity across ranks,
stochastic rounding reproducible, NaN propagation, error feedback (exact
residuals, and no drift of the running sum over 100 steps).
Exit status non-zero on the first wrong result."""
import numpy as np

import pycomm
from pycomm import _C, hierarchy
from common import check_identical, comm_from_env, log

SEED = 4321
COUNTS = [0, 1, 5, 63, 64, 65, 200, 1000, 4097, 100003]


def inputs(n, count, dtype, step=0):
    xs = [np.random.default_rng([SEED, step, p, count]).standard_normal(count).astype(np.float32)
          for p in range(n)]
    if dtype == "float16":
        xs = [x.astype(np.float16) for x in xs]
    return xs


def as_torch(x, dtype):
    import torch
    return torch.from_numpy(x).to(getattr(torch, dtype))


def widened(x):
    return np.asarray(x.float() if hasattr(x, "float") else x, dtype=np.float32)


def rel_rms(got, ref):
    if ref.size == 0:
        return 0.0
    return float(np.sqrt(np.mean((got - ref) ** 2)) / max(np.sqrt(np.mean(ref ** 2)), 1e-30))


def owner_slices(count, n, block):
    nblk = -(-count // block)
    off = [c * (nblk // n) + min(c, nblk % n) for c in range(n + 1)]
    return [(min(count, off[j] * block), min(count, off[j + 1] * block)) for j in range(n)]


def simulate_allreduce(xs, op, block, worker=None, owner=None):
    """The exact result of a deterministic compressed allreduce; updates the
    residual arrays (per rank / whole tensor) like the ranks do. Each slice's
    owner takes its own contribution unquantized (its residual folded in and
    emptied); everything else is quantized once, summed in rank order,
    requantized by the owner and dequantized."""
    n, count = len(xs), widened(xs[0]).size
    slices = owner_slices(count, n, block)
    dense = []
    for p, (lo, hi) in enumerate(slices):
        own = widened(xs[p])[lo:hi].astype(np.float32)
        dense.append(own + worker[p][lo:hi] if worker is not None else own)
    qs, ss = [], []
    for p, x in enumerate(xs):
        q, s = pycomm.quantize_int8(x, block_size=block,
                                    residual=None if worker is None else worker[p])
        qs.append(q)
        ss.append(s)
    if worker is not None:
        for p, (lo, hi) in enumerate(slices):
            worker[p][lo:hi] = 0
    out = np.empty(count, np.float32)
    divisor = float(n) if op == "avg" else 1.0
    for j, (lo, hi) in enumerate(slices):
        if hi == lo:
            continue
        b0, b1 = lo // block, -(-hi // block)
        Q, S = np.empty(hi - lo, np.int8), np.empty(b1 - b0, np.float32)
        _C._reduce_requantize_int8([q[lo:hi] for q in qs], [s[b0:b1] for s in ss], block, divisor,
                                   False, 0, None if owner is None else owner[lo:hi], Q, S,
                                   dense=dense[j], dense_index=j)
        out[lo:hi] = pycomm.dequantize_int8(Q, S, block_size=block)
    return out


def simulate_reduce_scatter(xs, op, block, rank, count):
    n = len(xs)
    acc = None
    for p, x in enumerate(xs):
        part = x[rank * count:(rank + 1) * count]
        if p == rank:  # the owner's own block is never quantized
            d = widened(part).astype(np.float32)
        else:
            q, s = pycomm.quantize_int8(part, block_size=block)
            d = pycomm.dequantize_int8(q, s, block_size=block)
        acc = d if acc is None else acc + d
    return acc / np.float32(n) if op == "avg" else acc


def check_allreduce(comm, count, dtype, op, block):
    n, r = comm.size, comm.rank
    xs = inputs(n, count, dtype)
    if dtype == "bfloat16":
        xs = [as_torch(x, dtype) for x in xs]
    what = f"int8 allreduce {dtype} {op} count={count} block={block}"
    want = simulate_allreduce(xs, op, block)
    ref = np.sum([widened(x).astype(np.float64) for x in xs], axis=0)
    if op == "avg":
        ref = ref / n
    if dtype == "float32":
        x = xs[r].copy()
        got = comm.allreduce(x, op=op, compress="int8", block_size=block)
        assert got is x, what + ": float32 allreduce is in place"
    else:
        got = comm.allreduce(xs[r], op=op, compress="int8", block_size=block)
        assert widened(got).dtype == np.float32 and got.dtype in (np.float32, getattr(got, "dtype", None))
    got = widened(got)
    assert np.array_equal(got.view(np.int32), want.view(np.int32)), \
        f"{what}: differs from the single-process simulation at {np.flatnonzero(got != want)[:5]}"
    check_identical(comm, got, what)
    err = rel_rms(got, ref)
    bound = 0.010 if block <= 64 else 0.015 if block <= 256 else 0.02  # a larger block, a coarser scale
    if count >= 1000:
        assert err <= bound, f"{what}: normalized RMS error {err:.4%} > {bound:.1%}"
    out = np.empty(count, np.float32)
    comm.allreduce(xs[r], op=op, compress="int8", block_size=block, out=out)
    assert np.array_equal(out.view(np.int32), want.view(np.int32)), what + ": out of place differs"
    return err


def simulate_hierarchical_reduce_scatter(xs, op, block, rank, count, hosts):
    """Several hosts x L ranks (hierarchy.py): each host's float32 sum of the
    block (exact to simulate for L = 2: a + b is b + a), then the two-shot
    across hosts on those sums, the rank's own host's unquantized."""
    grid, nhosts, local = hierarchy.placement(hosts)
    h = grid[rank][0]
    lo, hi = rank * count, (rank + 1) * count
    sums = [None] * nhosts
    for p, (hp, _) in enumerate(grid):
        part = widened(xs[p][lo:hi]).astype(np.float32)
        sums[hp] = part if sums[hp] is None else sums[hp] + part
    acc = None
    for hp, part in enumerate(sums):
        if hp != h:
            q, s = pycomm.quantize_int8(part, block_size=block)
            part = pycomm.dequantize_int8(q, s, block_size=block)
        acc = part if acc is None else acc + part
    return acc / np.float32(len(xs)) if op == "avg" else acc


def check_reduce_scatter(comm, count, dtype, op, block):
    n, r = comm.size, comm.rank
    xs = inputs(n, count * n, dtype)
    what = f"int8 reduce_scatter {dtype} {op} count={count} block={block}"
    if comm._hierarchical and dtype == "float32":  # float32 numpy: the hierarchical path
        assert hierarchy.placement(comm.hosts)[2] == 2, "the simulation is exact for 2 ranks per host"
        want = simulate_hierarchical_reduce_scatter(xs, op, block, r, count, comm.hosts)
    else:
        want = simulate_reduce_scatter(xs, op, block, r, count)
    got = comm.reduce_scatter(xs[r], op=op, compress="int8", block_size=block)
    assert got.dtype == np.float32 and got.size == count, what
    assert np.array_equal(got.view(np.int32), want.view(np.int32)), what + ": differs from the simulation"
    if comm._hierarchical and dtype == "float32" and count >= 1000:  # no worse than the flat two-shot
        ref = np.sum([x[r * count:(r + 1) * count].astype(np.float64) for x in xs], axis=0)
        ref = ref / n if op == "avg" else ref
        flat = simulate_reduce_scatter(xs, op, block, r, count)
        assert rel_rms(got, ref) <= rel_rms(flat, ref), \
            f"{what}: hierarchical error {rel_rms(got, ref):.4%} > flat {rel_rms(flat, ref):.4%}"
    if dtype == "float32":  # in place: out is this rank's block of x
        x = xs[r].copy()
        comm.reduce_scatter(x, op=op, compress="int8", block_size=block, out=x[r * count:(r + 1) * count])
        assert np.array_equal(x[r * count:(r + 1) * count], got), what + ": in place differs"


def check_allgather(comm, count, dtype, block, out_dtype=None):
    """Each rank's part quantized once, every part dequantized from the same
    bytes (its own included), then cast to out's dtype (x's by default)."""
    n, r = comm.size, comm.rank
    xs = inputs(n, count, dtype if dtype != "bfloat16" else "float32")
    if dtype == "bfloat16":
        xs = [as_torch(x, dtype) for x in xs]
    what = f"int8 allgather {dtype} count={count} block={block} out {out_dtype or 'like x'}"
    parts = []
    for x in xs:
        q, sc = pycomm.quantize_int8(x, block_size=block)
        parts.append(pycomm.dequantize_int8(q, sc, block_size=block))
    want = np.concatenate(parts)
    if out_dtype is None and dtype == "float16":
        want = want.astype(np.float16)
    elif out_dtype is None and dtype == "bfloat16":
        want = widened(as_torch(want, "bfloat16"))
    out = None
    if out_dtype == "float32":
        out = np.empty(n * count, np.float32)
    got = comm.allgather(xs[r], compress="int8", block_size=block, out=out)
    assert out is None or got is out, what + ": out not returned"
    got = widened(got) if dtype == "bfloat16" and out_dtype is None else np.asarray(got)
    assert got.dtype == want.dtype and got.shape == want.shape, f"{what}: {got.dtype} {got.shape}"
    assert np.array_equal(got.view(np.uint8), want.view(np.uint8)), \
        f"{what}: differs from quantize + dequantize of every part at {np.flatnonzero(got != want)[:5]}"
    check_identical(comm, got, what)
    if dtype == "float32" and out_dtype is None:  # in place: x is this rank's part of out
        buf = np.full(n * count, np.nan, np.float32)
        buf[r * count:(r + 1) * count] = xs[r]
        comm.allgather(buf[r * count:(r + 1) * count], compress="int8", block_size=block, out=buf)
        assert np.array_equal(buf.view(np.int32), want.view(np.int32)), what + ": in place differs"
    ref = np.concatenate([widened(x).astype(np.float64) for x in xs])
    err = rel_rms(got.astype(np.float64), ref)
    bound = 0.007 if block <= 64 else 0.015 if block <= 256 else 0.02  # a larger block, a coarser scale
    if count >= 1000:  # a few thousand samples: the RMS itself varies by a few percent
        assert err <= bound, f"{what}: normalized RMS error {err:.4%} > {bound:.1%}"
    return err if count >= 100000 else 0.0


def check_stochastic(comm):
    n, r = comm.size, comm.rank
    xs = inputs(n, 5000, "float32")
    a = comm.allreduce(xs[r], compress="int8", stochastic=True, seed=7, out=np.empty(5000, np.float32))
    b = comm.allreduce(xs[r], compress="int8", stochastic=True, seed=7, out=np.empty(5000, np.float32))
    c = comm.allreduce(xs[r], compress="int8", stochastic=True, seed=8, out=np.empty(5000, np.float32))
    assert np.array_equal(a, b), "stochastic rounding with one seed is not reproducible"
    assert not np.array_equal(a, c), "stochastic rounding ignores the seed"
    check_identical(comm, a, "stochastic")
    ref = np.sum([x.astype(np.float64) for x in xs], axis=0)
    assert rel_rms(a, ref) <= 0.02, f"stochastic error {rel_rms(a, ref):.4%}"
    g = [comm.allgather(xs[r], compress="int8", stochastic=True, seed=s) for s in (7, 7, 8)]
    assert np.array_equal(g[0], g[1]) and not np.array_equal(g[0], g[2]), "stochastic allgather seed"
    check_identical(comm, g[0], "stochastic allgather")
    assert rel_rms(g[0], np.concatenate(xs)) <= 0.02, "stochastic allgather error"


def check_nonfinite(comm):
    n, r = comm.size, comm.rank
    x = inputs(n, 640, "float32")[r]
    if r == n - 1:
        x[130] = np.nan  # block 2 at block size 64
        x[600] = np.inf  # block 9
    got = comm.allreduce(x, compress="int8", out=np.empty(640, np.float32))
    bad = ~np.isfinite(got)
    assert bad[128:192].all() and bad[576:640].all(), "a non-finite block came out finite"
    assert not bad[:128].any() and not bad[192:576].any(), "non-finite values leaked into other blocks"
    check_identical(comm, got, "nonfinite")


def check_error_feedback(comm, count=3000, block=64, steps=100):
    n, r = comm.size, comm.rank
    ef = pycomm.ErrorFeedback()
    worker = [np.zeros(count, np.float32) for _ in range(n)]  # simulated, every rank's
    owner = np.zeros(count, np.float32)
    lo, hi = owner_slices(count, n, block)[r]
    run_ef = run_plain = exact = 0.0
    step_err = []
    for t in range(steps):
        xs = inputs(n, count, "float32", step=t + 1)
        want = simulate_allreduce(xs, "sum", block, worker, owner)
        got = comm.allreduce(xs[r].copy(), compress="int8", error_feedback=ef)
        assert np.array_equal(got, want), f"error feedback step {t}: differs from the simulation"
        assert np.array_equal(ef.worker, worker[r]) and np.array_equal(ef.owner, owner[lo:hi]), \
            f"error feedback step {t}: residuals differ from the simulation"
        plain = comm.allreduce(xs[r].copy(), compress="int8")
        e = np.sum([x.astype(np.float64) for x in xs], axis=0)
        step_err.append(np.sqrt(np.mean((plain - e) ** 2)))
        run_ef, run_plain, exact = run_ef + got, run_plain + plain, exact + e
    drift_ef = np.sqrt(np.mean((run_ef - exact) ** 2))
    drift_plain = np.sqrt(np.mean((run_plain - exact) ** 2))
    one_step = max(step_err)
    assert drift_ef <= 1.5 * one_step, f"error feedback drifts: {drift_ef:.3g} vs one step {one_step:.3g}"
    assert drift_plain > 3 * one_step, "without error feedback the error should accumulate"
    # A checkpoint restores the same state.
    state = ef.state_dict()
    ef2 = pycomm.ErrorFeedback()
    ef2.load_state_dict(state)
    x = inputs(n, count, "float32", step=999)[r]
    a = comm.allreduce(x.copy(), compress="int8", error_feedback=ef)
    b = comm.allreduce(x.copy(), compress="int8", error_feedback=ef2)
    assert np.array_equal(a, b) and np.array_equal(ef.owner, ef2.owner), "restored state differs"
    try:
        comm.allreduce(np.zeros(count + 1, np.float32), compress="int8", error_feedback=ef)
    except ValueError as e:
        assert "count" in str(e), e
    else:
        raise AssertionError("an ErrorFeedback accepted a tensor of another size")
    log(comm, f"error feedback: running-sum drift {drift_ef:.3g} with, {drift_plain:.3g} without "
        f"(one step {one_step:.3g})")


def main():
    comm = comm_from_env()
    # Tiny pieces as well: many rounds even for small counts.
    small = comm_from_env(options={"int8_piece_bytes": 256})
    n = comm.size
    errs = []
    for c in (comm, small):
        for count in COUNTS:
            for op in ("sum", "avg"):
                errs.append(check_allreduce(c, count, "float32", op, 64))
                check_reduce_scatter(c, count, "float32", op, 64)
    for dtype in ("float16", "bfloat16"):
        for count in (0, 77, 5000):
            check_allreduce(comm, count, dtype, "sum", 64)
    check_reduce_scatter(comm, 300, "float16", "avg", 32)
    for block in (32, 256, 4096):
        check_allreduce(small, 10000, "float32", "sum", block)
    gather_errs = []
    for c in (comm, small):
        for count in COUNTS:
            gather_errs.append(check_allgather(c, count, "float32", 64))
    for dtype in ("float16", "bfloat16"):
        for count in (0, 77, 5000):
            check_allgather(comm, count, dtype, 64)
            check_allgather(small, count, dtype, 32, out_dtype="float32")
    check_allgather(small, 10000, "float32", 4096)
    # Issue 20's bound for N(0,1) at block 64 (0.593% in the limit), on 100003 x size samples.
    assert max(gather_errs) <= 0.006, f"int8 allgather normalized RMS error {max(gather_errs):.4%} > 0.6%"
    check_stochastic(comm)
    check_nonfinite(comm)
    check_error_feedback(small)
    log(comm, f"largest normalized RMS error: allreduce {max(errs):.4%}, allgather {max(gather_errs):.4%}")
    small.close()
    comm.close()
    log(comm, f"compressed ok on {n} ranks")


if __name__ == "__main__":
    main()
