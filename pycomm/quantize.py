"""Block-wise symmetric int8 quantization (gradient compression).

    q, scales = pycomm.quantize_int8(x, block_size=64)
    y = pycomm.dequantize_int8(q, scales, block_size=64)

Per block of ``block_size`` elements (the last may be shorter):
``scale = max|v| / 127`` and ``q = clamp(round(v / scale), -127, 127)`` with
``v = x (+ residual)``. Rounding is to nearest even, or stochastic
(``floor(v / scale + u)``, u from a hash of (seed, element index): the same
seed gives the same bytes on every CPU). A block holding NaN or Inf gets a NaN
scale (it dequantizes to NaN) and its residual is reset to 0. Every ISA path
is bit-identical.
"""
import os

import numpy as np

from . import _C

__all__ = ["quantize_int8", "dequantize_int8"]


def _count(x):
    if hasattr(x, "numel") and callable(x.numel):  # torch.Tensor, without importing torch
        return int(x.numel())
    return int(np.asarray(x).size)


def _as_input(x):
    return x if hasattr(x, "__dlpack__") or isinstance(x, np.ndarray) else np.asarray(x)


def quantize_int8(x, block_size=64, stochastic=False, seed=None, residual=None):
    """Quantize x (numpy float32/float16, or a CPU torch float32/float16/bfloat16 tensor).

    Returns (q, scales): q is int8 with x's element count (flat), scales is
    float32 with ceil(count / block_size) entries. With ``residual`` (a float32
    numpy array of the same count), error feedback: x + residual is quantized
    and residual is updated in place to x + residual - dequantize(q).
    ``seed`` (stochastic rounding only) defaults to a random one.
    """
    x = _as_input(x)
    n = _count(x)
    block_size = int(block_size)
    if block_size < 32 or block_size > 4096 or block_size & (block_size - 1):
        raise ValueError(f"block_size must be a power of two in [32, 4096], got {block_size}")
    if stochastic and seed is None:
        seed = int.from_bytes(os.urandom(8), "little")
    seed = 0 if seed is None else int(seed) & 0xFFFFFFFFFFFFFFFF
    q = np.empty(n, dtype=np.int8)
    scales = np.empty(-(-n // block_size), dtype=np.float32)
    _C._quantize_int8(x, block_size, bool(stochastic), seed, residual, q, scales)
    return q, scales


def dequantize_int8(q, scales, block_size=64, out=None):
    """float32 values q * scale (per block); into ``out`` when given: float32,
    or float16 / bfloat16, each value rounded to nearest even as numpy's and
    torch's casts do (a NaN block gives their canonical NaN)."""
    q = np.asarray(q)
    if out is None:
        out = np.empty(q.size, dtype=np.float32)
    _C._dequantize_int8(q, scales, int(block_size), out, False)
    return out
