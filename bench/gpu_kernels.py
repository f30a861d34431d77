"""Bandwidth of pycomm's CUDA kernels, against the GPU's own copy bandwidth.

    python bench/gpu_kernels.py [--sizes-mib 64,256] [--block-size 64] [--reps 25]

Times each kernel with CUDA events (warm-up calls, then the median of --reps
single-call timings) on float32 inputs of each size, and a device-to-device
copy (torch copy_ of the largest size) as the reference: bytes read plus
bytes written per call, divided by the time. Prints a markdown table:
kernel | input | bytes moved per call | time | GB/s | % of copy.
Needs a GPU, torch with CUDA, and pycomm built with CUDA.
"""
import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from pycomm import _C  # noqa: E402

C = _C.cuda
F32, SUM = 0, 0  # dtype and op codes (csrc/common/dtype.h)
MIB = 1 << 20


def time_us(fn, reps, warmup=3):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1000.0)
    return statistics.median(times)


def kernels(n, block, stream):
    """(name, bytes moved per call, callable) for n float32 elements."""
    nb = -(-n // block)
    dev = "cuda"
    x = torch.randn(n, device=dev)
    y = torch.randn(n, device=dev)
    dst = torch.empty(n, device=dev)
    dst2 = torch.empty(n, device=dev)
    residual = torch.randn(n, device=dev) * 0.01
    q = torch.empty(n, dtype=torch.int8, device=dev)
    s = torch.empty(nb, device=dev)
    q2 = torch.empty(n, dtype=torch.int8, device=dev)
    s2 = torch.empty(nb, device=dev)
    qo = torch.empty(n, dtype=torch.int8, device=dev)
    so = torch.empty(nb, device=dev)
    C.quantize_int8(x.data_ptr(), F32, n, block, False, 0, None, q.data_ptr(), s.data_ptr(),
                    stream)
    C.quantize_int8(y.data_ptr(), F32, n, block, False, 0, None, q2.data_ptr(), s2.data_ptr(),
                    stream)
    p = lambda t: t.data_ptr()  # noqa: E731
    sc = 4 * nb  # scale bytes
    return [
        ("reduce (sum, 2 inputs)", 3 * 4 * n,
         lambda: C.reduce(p(dst), p(x), p(y), n, F32, SUM, stream)),
        ("reduce_n (sum, 2 sources)", 3 * 4 * n,
         lambda: C.reduce_n(p(dst), [p(x), p(y)], n, F32, SUM, stream)),
        ("reduce_n_to (sum, 2 sources, 2 targets)", 4 * 4 * n,
         lambda: C.reduce_n_to([p(dst), p(dst2)], [p(x), p(y)], n, F32, SUM, 1.0, stream)),
        ("quantize", 4 * n + n + sc,
         lambda: C.quantize_int8(p(x), F32, n, block, False, 0, None, p(q), p(s), stream)),
        ("quantize + residual", 4 * n + 8 * n + n + sc,
         lambda: C.quantize_int8(p(x), F32, n, block, False, 0, p(residual), p(q), p(s),
                                 stream)),
        ("quantize stochastic + residual", 4 * n + 8 * n + n + sc,
         lambda: C.quantize_int8(p(x), F32, n, block, True, 7, p(residual), p(q), p(s),
                                 stream)),
        ("dequantize", n + sc + 4 * n,
         lambda: C.dequantize_int8(p(q), p(s), n, block, p(dst), False, stream)),
        ("dequantize-accumulate", n + sc + 8 * n,
         lambda: C.dequantize_int8(p(q), p(s), n, block, p(dst), True, stream)),
        ("reduce_requantize (2 sources)", 2 * (n + sc) + n + sc,
         lambda: C.reduce_requantize_int8([p(q), p(q2)], [p(s), p(s2)], n, block, 2.0, False,
                                          0, None, p(qo), p(so), stream)),
    ]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes-mib", default="64,256", help="float32 input sizes in MiB")
    ap.add_argument("--block-size", type=int, default=64, help="int8 quantization block")
    ap.add_argument("--reps", type=int, default=25)
    args = ap.parse_args(argv)
    if not C.built():
        sys.exit("pycomm was built without CUDA (rebuild with PYCOMM_CUDA=1)")
    if not torch.cuda.is_available():
        sys.exit("no CUDA device visible to torch")
    sizes = [int(v) for v in args.sizes_mib.split(",")]
    stream = torch.cuda.current_stream().cuda_stream

    big = max(sizes) * MIB // 4
    src = torch.randn(big, device="cuda")
    dst = torch.empty_like(src)
    copy_bytes = 2 * 4 * big
    copy_us = time_us(lambda: dst.copy_(src), args.reps)
    copy_gbs = copy_bytes / copy_us / 1e3
    del src, dst

    rows = [("copy (torch copy_)", f"{max(sizes)} MiB", copy_bytes, copy_us, copy_gbs)]
    pct = {}
    for mib in sizes:
        n = mib * MIB // 4
        for name, nbytes, fn in kernels(n, args.block_size, stream):
            us = time_us(fn, args.reps)
            rows.append((name, f"{mib} MiB", nbytes, us, nbytes / us / 1e3))
            pct[(name, mib)] = rows[-1][4] / copy_gbs * 100
        torch.cuda.empty_cache()

    print(f"\nGPU: {torch.cuda.get_device_name(0)}; float32 inputs; int8 block size "
          f"{args.block_size}; median of {args.reps} calls (CUDA events)\n")
    print("| kernel | input | bytes moved per call | time (us) | GB/s | % of copy |")
    print("|---|---|---:|---:|---:|---:|")
    for name, size, nbytes, us, gbs in rows:
        print(f"| {name} | {size} | {nbytes / MIB:,.1f} MiB | {us:,.1f} | {gbs:,.0f} | "
              f"{gbs / copy_gbs * 100:.0f}% |")
    top = max(sizes)
    for name in ("quantize", "dequantize-accumulate"):
        v = pct[(name, top)]
        print(f"\ntarget {name} >= 80% of copy at {top} MiB: {v:.0f}% "
              f"({'met' if v >= 80 else 'NOT met'})", end="")
    print()


if __name__ == "__main__":
    main()
