"""Benchmark inputs and their reference results (numpy only).

Every rank's input is a pure function of (seed, rank, element index), made in
fixed chunks of GEN_CHUNK elements each seeded separately, so any rank can
regenerate any slice of any rank's input without materializing it whole. The
checker works slice by slice too, which keeps its memory flat at 256 MiB.

Values are chosen so the exact result is representable: integers never
overflow (sum and prod ranges shrink with the number of ranks), float products
stay near 1. The reference is float64 for floating types (with a tolerance
from a rounding-error bound) and exact int64 for integer types (float64 cannot
hold every int64).
"""
import hashlib
from dataclasses import dataclass

import numpy as np

from pycomm import _C

GEN_CHUNK = 1 << 18     # elements per independently seeded block of input
CHECK_CHUNK = 1 << 20   # elements compared at a time

# name -> (storage dtype, unit roundoff eps, smallest subnormal). bfloat16 is
# kept as its raw uint16 bits: numpy has no bfloat16.
FLOATS = {
    "float64": (np.float64, 2.0 ** -52, 2.0 ** -1074),
    "float32": (np.float32, 2.0 ** -23, 2.0 ** -149),
    "float16": (np.float16, 2.0 ** -10, 2.0 ** -24),
    "bfloat16": (np.uint16, 2.0 ** -7, 2.0 ** -133),
}
INTS = {"int8": np.int8, "uint8": np.uint8, "int32": np.int32, "int64": np.int64}
DTYPES = tuple(FLOATS) + tuple(INTS)
REDOPS = tuple(_C.REDUCE_OPS)


def storage_dtype(name):
    return np.dtype(FLOATS[name][0] if name in FLOATS else INTS[name])


def to_storage(values, name):
    """float64/int64 values -> the dtype's storage (round to nearest even for bfloat16)."""
    if name != "bfloat16":
        return values.astype(storage_dtype(name))
    bits = values.astype(np.float32).view(np.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def to_reference(stored, name):
    """Storage -> float64 (floats) or int64 (integers), exactly."""
    if name == "bfloat16":
        return (stored.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return stored.astype(np.float64 if name in FLOATS else np.int64)


@dataclass(frozen=True)
class DataSpec:
    dtype: str
    redop: str      # "none" for allgather and broadcast
    nranks: int
    seed: int = 0

    @property
    def is_float(self):
        return self.dtype in FLOATS

    def value_range(self):
        """(lo, hi) of input values: closed for integers, half-open for floats."""
        n = self.nranks
        if self.is_float:
            return (0.5, 1.5) if self.redop == "prod" else (-1.0, 1.0)
        info = np.iinfo(INTS[self.dtype])
        if self.redop == "sum":
            lim = info.max // n
        elif self.redop == "prod":
            lim = int(round(info.max ** (1.0 / n)))  # integer n-th root of max
            while lim ** n > info.max:
                lim -= 1
            while (lim + 1) ** n <= info.max:
                lim += 1
        else:  # min, max, none: anything goes
            lim = int(info.max)
        lim = min(lim, 2 ** 53)  # generated through float64, which is exact up to 2^53
        return (-lim if info.min < 0 else 0), lim

    def inputs(self, rank, start, stop):
        """Storage array of `rank`'s input elements [start, stop)."""
        parts = []
        for chunk in range(start // GEN_CHUNK, (stop - 1) // GEN_CHUNK + 1 if stop > start else 0):
            base = chunk * GEN_CHUNK
            u = np.random.default_rng([self.seed, rank, chunk]).random(GEN_CHUNK)
            parts.append(u[max(start, base) - base:min(stop, base + GEN_CHUNK) - base])
        u = np.concatenate(parts) if parts else np.empty(0)
        lo, hi = self.value_range()
        if self.is_float:
            return to_storage(lo + u * (hi - lo), self.dtype)
        values = np.minimum(np.floor(lo + u * (float(hi) - lo + 1.0)), hi)  # int64 keeps all bounds exact
        return values.astype(np.int64).astype(INTS[self.dtype])

    def fill(self, out, rank):
        """Writes `rank`'s input into the storage array `out`, chunk by chunk."""
        for a in range(0, out.size, CHECK_CHUNK):
            b = min(out.size, a + CHECK_CHUNK)
            out[a:b] = self.inputs(rank, a, b)

    def reduce(self, contributions):
        """Reference result of reducing the ranks' values (float64/int64 arrays) and its tolerance."""
        n = self.nranks
        acc = contributions[0].copy()
        mag = np.abs(acc) if self.is_float else None
        fold = {"sum": np.add, "avg": np.add, "prod": np.multiply, "min": np.minimum, "max": np.maximum}[self.redop]
        for x in contributions[1:]:
            fold(acc, x, out=acc)
            if mag is not None:
                mag += np.abs(x)
        if not self.is_float:
            return acc, 0.0
        _, eps, tiny = FLOATS[self.dtype]
        # Bounds on rounding error of n-1 operations in the dtype (2x margin), in
        # any order: sums by the sum of magnitudes, products relative to the result.
        if self.redop == "sum":
            tol = n * eps * mag + n * tiny
        elif self.redop == "avg":
            acc /= n
            tol = (n + 1) * eps * mag / n + n * tiny
        elif self.redop == "prod":
            tol = (n + 1) * eps * np.abs(acc)
        else:
            tol = 0.0  # min/max pick an input: exact
        return acc, tol

    def count_wrong(self, got, expected, tol):
        """Elements of storage `got` outside `tol` of `expected` (NaN counts as wrong)."""
        got = to_reference(got, self.dtype)
        if self.is_float:
            return int(np.count_nonzero(~(np.abs(got - expected) <= tol)))
        return int(np.count_nonzero(got != expected))


def _slices(count):
    for a in range(0, count, CHECK_CHUNK):
        yield a, min(count, a + CHECK_CHUNK)


def check(op, spec, rank, out, count, root=0):
    """Wrong elements in this rank's output `out` (storage) of `op` on per-rank `count` elements.

    count: allreduce/reduce/broadcast element count, reduce_scatter/scatter
    output count, allgather/gather input count, alltoall block count. Rooted
    ops have root 0; a rank without an output has nothing wrong.
    """
    n, wrong = spec.nranks, 0
    if op in ("gather", "reduce") and rank != root:
        return 0
    for a, b in _slices(count):
        if op in ("allgather", "gather"):
            for r in range(n):
                expected = to_reference(spec.inputs(r, a, b), spec.dtype)
                wrong += spec.count_wrong(out[r * count + a:r * count + b], expected, 0.0)
        elif op == "broadcast":
            wrong += spec.count_wrong(out[a:b], to_reference(spec.inputs(root, a, b), spec.dtype), 0.0)
        elif op == "scatter":
            expected = to_reference(spec.inputs(root, rank * count + a, rank * count + b), spec.dtype)
            wrong += spec.count_wrong(out[a:b], expected, 0.0)
        elif op == "sendrecv":  # the partner's message (the last of an odd number of ranks idles)
            p = rank ^ 1
            if p < n:
                wrong += spec.count_wrong(out[a:b], to_reference(spec.inputs(p, a, b), spec.dtype), 0.0)
        elif op == "alltoall":  # block p of the output: block `rank` of rank p's input
            for p in range(n):
                expected = to_reference(spec.inputs(p, rank * count + a, rank * count + b), spec.dtype)
                wrong += spec.count_wrong(out[p * count + a:p * count + b], expected, 0.0)
        else:  # allreduce, reduce, reduce_scatter: this rank's output is block `rank` of the reduction
            off = rank * count if op == "reduce_scatter" else 0
            xs = [to_reference(spec.inputs(r, off + a, off + b), spec.dtype) for r in range(n)]
            expected, tol = spec.reduce(xs)
            wrong += spec.count_wrong(out[a:b], expected, tol)
    return wrong


def error_sums(op, spec, rank, out, count):
    """For a lossy (compressed) allreduce/reduce_scatter/allgather: [sum of
    squared errors, sum of squared reference values, largest absolute error,
    element count, non-finite outputs] of this rank's output, against the
    float64 reduction (allgather: every rank's input as it was)."""
    n = spec.nranks
    sse = ssr = worst = 0.0
    nonfinite = 0
    off = rank * count if op == "reduce_scatter" else 0
    for a, b in _slices(count):
        if op == "allgather":
            pairs = [(out[r * count + a:r * count + b], to_reference(spec.inputs(r, a, b), spec.dtype))
                     for r in range(n)]
        else:
            xs = [to_reference(spec.inputs(r, off + a, off + b), spec.dtype) for r in range(n)]
            pairs = [(out[a:b], spec.reduce(xs)[0])]
        for part, expected in pairs:
            got = to_reference(part, spec.dtype)
            finite = np.isfinite(got)
            nonfinite += int(np.count_nonzero(~finite))
            err = np.abs(got[finite] - expected[finite])
            sse += float(np.sum(err ** 2))
            ssr += float(np.sum(expected ** 2))
            worst = max(worst, float(err.max(initial=0.0)))
    return [sse, ssr, worst, float(count * (n if op == "allgather" else 1)), float(nonfinite)]


def digest(array):
    """A 62-bit hash of the array's bytes (fits int64 with its negation)."""
    h = hashlib.blake2b(memoryview(np.ascontiguousarray(array)).cast("B"), digest_size=8)
    return int.from_bytes(h.digest(), "little") >> 2
