"""The per-rank measurement loop, the same for every library.

Timing: one barrier, then `warmup` untimed and `iters` timed back-to-back
calls, each timed on its own. A collective is done when its slowest rank is,
so each iteration's time is the max over ranks (an allreduce of the timings
through the library under test); the reported time is the median of those,
with p99 and min alongside. allreduce runs in place, so its input is copied
back (untimed) before every call: the data never drifts towards inf/denormals
and the last call's result is exactly one allreduce of the input, which
--check verifies.
"""
import time
from dataclasses import dataclass

import numpy as np

from pycomm.operations import OPERATIONS as _OPERATIONS  # busbw(n): nccl-tests' factor, from the core's table

from . import data
ITER_BYTES = 1 << 30          # auto iterations: about this many bytes per size ...
MIN_ITERS, MAX_ITERS = 5, 1000  # ... within these bounds


@dataclass
class Plan:
    """Buffers of one size. `bytes` and `count` follow nccl-tests: bytes is the
    whole allgather output / reduce_scatter input; count is per rank."""
    bytes: int
    count: int
    send_count: int
    recv_count: int


def plan(op, size, itemsize, nranks):
    """The buffers for a requested size in bytes, or None when it holds no element per rank."""
    if op == "sendrecv":  # a message each way between partners
        count = size // itemsize
        return Plan(count * itemsize, count, count, count) if count else None
    row = _OPERATIONS[op]
    if "ranks" in (row["in"].split()[0], row["out"].split()[0]):  # size: the whole buffer, as nccl-tests
        count = size // itemsize // nranks
        whole = count * nranks
        send = whole if row["in"].startswith("ranks") else count
        recv = whole if row["out"].startswith("ranks") else count
        return Plan(whole * itemsize, count, send, recv) if count else None
    count = size // itemsize
    return Plan(count * itemsize, count, count, count) if count else None


def auto_iters(nbytes):
    return max(MIN_ITERS, min(MAX_ITERS, ITER_BYTES // max(nbytes, 1)))


def auto_warmup(iters):
    return max(2, min(50, iters // 10))


def measure(backend, op, p, spec, iters, warmup, check):
    """One row: time `op` on the buffers of plan `p`, then optionally check the result."""
    dtype = spec.dtype
    storage = data.storage_dtype(dtype)
    send = np.empty(p.send_count, storage)
    spec.fill(send, backend.rank)
    recv = send if op == "broadcast" else np.empty(p.recv_count, storage)
    send_w = backend.wrap(send, dtype)
    recv_w = send_w if recv is send else backend.wrap(recv, dtype)
    redop = spec.redop
    if op in ("allreduce", "reduce"):  # in place on recv: the same input every call
        def restore():
            np.copyto(recv, send)
    else:
        def restore():
            pass
    run = backend.run
    for _ in range(warmup):
        restore()
        run(op, send_w, recv_w, redop)
    backend.barrier()
    times = np.empty(iters)
    clock = time.perf_counter_ns
    for i in range(iters):
        restore()
        t0 = clock()
        run(op, send_w, recv_w, redop)
        times[i] = clock() - t0
    times = backend.allreduce_array(times, "max") / 1e3  # us, slowest rank per iteration

    row = stats_row(op, p, spec, times)
    row.update(iters=iters, warmup=warmup, wrong=None, identical=None)
    lossy = getattr(backend, "lossy", False)
    if lossy:  # compressed: the error is part of the result, measured always
        sse, ssr, worst, n, nonfinite = data.error_sums(op, spec, backend.rank, recv, p.count)
        sums = backend.allreduce_array(np.array([sse, ssr, n, nonfinite]), "sum")
        worst = backend.allreduce_array(np.array([worst]), "max")[0]
        ref_rms = np.sqrt(sums[1] / sums[2]) if sums[1] > 0 else 1.0
        row.update(rms_err=float(np.sqrt(sums[0] / sums[2]) / ref_rms), max_err=float(worst / ref_rms))
    if check:
        # A lossy result is wrong only where it is not finite; its error has its own columns.
        wrong = int(nonfinite) if lossy else data.check(op, spec, backend.rank, recv, p.count)
        row["wrong"] = int(backend.allreduce_array(np.array([wrong], np.int64), "sum")[0])
        if op in ("allreduce", "allgather", "broadcast"):  # every rank holds the same result: bitwise identical
            h = data.digest(recv)
            hi, neg_lo = backend.allreduce_array(np.array([h, -h], np.int64), "max")
            row["identical"] = bool(hi == -neg_lo)
            if not row["identical"]:
                row["wrong"] = max(row["wrong"], 1)  # so that wrong == 0 alone means "all good"
    return row


def busbw_factor(op, nranks):
    """nccl-tests' bus bandwidth over algbw; sendrecv is a ping-pong, a
    message each way per iteration: bytes / (time / 2)."""
    return 2.0 if op == "sendrecv" else _OPERATIONS[op]["busbw"](nranks)


def stats_row(op, p, spec, times_us):
    median = float(np.median(times_us))
    algbw = p.bytes / median / 1e3  # bytes/us -> GB/s
    return {
        "op": op, "bytes": p.bytes, "count": p.count, "dtype": spec.dtype, "redop": spec.redop,
        "nranks": spec.nranks, "time_us": median, "algbw_GBps": algbw,
        "busbw_GBps": algbw * busbw_factor(op, spec.nranks),
        "p99_us": float(np.percentile(times_us, 99, method="higher")), "min_us": float(times_us.min()),
    }


def sweep(backend, op, sizes, spec, iters=None, warmup=None, check=False):
    """Rows for every size, on this rank (every rank gets the same rows)."""
    rows, seen = [], set()
    for size in sizes:
        p = plan(op, size, data.storage_dtype(spec.dtype).itemsize, spec.nranks)
        if p is None or p.bytes in seen:  # rounding to whole elements per rank can repeat a size
            continue
        seen.add(p.bytes)
        n_iters = iters or auto_iters(p.bytes)
        n_warmup = warmup if warmup is not None else auto_warmup(n_iters)
        row = measure(backend, op, p, spec, n_iters, n_warmup, check)
        row.update(library=backend.name, transport=backend.transport, version=backend.version)
        rows.append(row)
    return rows
