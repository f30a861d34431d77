"""Single-core kernel throughput: python -m pycomm.bench kernels [-e 64M] [--iters N]

GB/s of float32 input per core (int8 output bytes not counted), for every
instruction set this CPU has, next to memcpy (numpy copyto) as the ceiling
of a pass that reads and writes memory once. The int8 target: quantize and
fused dequant-accumulate at least 6 GB/s per core on AVX-512.
"""
import argparse
import time

import numpy as np

from pycomm import _C
from .cli import parse_size

K = _C.kernels


def _median_seconds(fn, iters):
    fn()  # warm: page faults, caches
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def cases(count, block):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(count).astype(np.float32)
    y = rng.standard_normal(count).astype(np.float32)
    out = np.empty_like(x)
    res = np.zeros_like(x)
    q = np.empty(count, np.int8)
    s = np.empty(-(-count // block), np.float32)
    _C._quantize_int8(y, block, False, 0, None, q, s)
    q2, s2 = q.copy(), s.copy()
    qo, so = np.empty_like(q), np.empty_like(s)
    f32 = _C.DTYPES["float32"]
    return [
        ("memcpy (numpy copyto)", lambda: np.copyto(out, x)),
        ("reduce sum float32", lambda: K.reduce(out, x, y, f32, 0)),
        ("quantize", lambda: _C._quantize_int8(x, block, False, 0, None, q, s)),
        ("quantize + error feedback", lambda: _C._quantize_int8(x, block, False, 0, res, q, s)),
        ("quantize stochastic", lambda: _C._quantize_int8(x, block, True, 1, None, q, s)),
        ("dequantize", lambda: _C._dequantize_int8(q, s, block, out, False)),
        ("dequantize-accumulate", lambda: _C._dequantize_int8(q, s, block, out, True)),
        ("reduce-requantize, 2 sources", lambda: _C._reduce_requantize_int8([q, q2], [s, s2], block, 1.0,
                                                                             False, 0, None, qo, so)),
    ]


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m pycomm.bench kernels", description=__doc__.split("\n")[0])
    p.add_argument("-e", "--bytes", type=parse_size, default="64M", help="float32 bytes per call (default 64M)")
    p.add_argument("--block-size", type=int, default=64)
    p.add_argument("--iters", type=int, default=10)
    args = p.parse_args(argv)
    count = args.bytes // 4
    before = K.active_isa()
    isas = [i for i in ("baseline", "avx2", "avx512") if K.set_isa(i)]
    results = {}
    try:
        for isa in isas:
            K.set_isa(isa)
            for name, fn in cases(count, args.block_size):
                if name.startswith("memcpy") and results.get(name):
                    continue
                results.setdefault(name, {})[isa] = args.bytes / _median_seconds(fn, args.iters) / 1e9
    finally:
        K.set_isa(before)
    print(f"# pycomm.bench kernels: {args.bytes} bytes of float32 per call, block {args.block_size}, "
          f"median of {args.iters}, one core; GB/s of float32 input")
    print("| kernel | " + " | ".join(isas) + " |")
    print("| --- |" + " ---: |" * len(isas))
    for name, by_isa in results.items():
        cells = [f"{by_isa[i]:.2f}" if i in by_isa else "" for i in isas]
        if name.startswith("memcpy"):
            cells = [f"{next(iter(by_isa.values())):.2f}"] * len(isas)
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0
