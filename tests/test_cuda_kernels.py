"""CUDA kernels (_C.cuda) against the CPU kernels, on a GPU.

Everything the CPU defines exactly is compared bit for bit: int8 quantize
(float32/float16/bfloat16 input, round to nearest or stochastic, with and
without error feedback), dequantize and dequantize-accumulate (NaN payloads
included), the fused reduce-requantize against the CPU composition
(dequantize, accumulate, float32 division, quantize), the two-input reduce
and divide for every dtype and op (every float16/bfloat16 bit pattern
included). reduce_n, which accumulates half types in float32, is compared with
a float64 reference within a tolerance. Pointers offset by one element take
the kernels' unaligned paths.

Needs torch with CUDA and a pycomm built with CUDA; skipped otherwise.
"""
import numpy as np
import pytest

import pycomm
from pycomm import _C

C = _C.cuda
if not C.built():
    pytest.skip("pycomm was built without CUDA", allow_module_level=True)
torch = pytest.importorskip("torch", reason="torch is not installed")
if not torch.cuda.is_available():
    pytest.skip("torch has no CUDA device", allow_module_level=True)

F32 = np.float32
DTYPES = dict(_C.DTYPES)  # csrc/common/dtype.h
OPS = dict(_C.REDUCE_OPS)
QUANT_DTYPES = ("float32", "float16", "bfloat16")
MODES = ("rne", "stochastic", "rne+feedback", "stochastic+feedback")
BLOCKS = (32, 64, 4096)
COUNTS = (0, 1, 31, 1000, 100003)
SEED = 0xDEADBEEFCAFEF00D


# ---- device buffers ------------------------------------------------------------

def stream():
    return torch.cuda.current_stream().cuda_stream


class Dev:
    """A numpy array's bytes in GPU memory, starting `offset` elements into the
    allocation (offset 1 leaves the pointer unaligned for 16-byte access)."""

    def __init__(self, a, offset=0):
        a = np.ascontiguousarray(a).reshape(-1)
        self.dtype, self.count = a.dtype, a.size
        self.skip = offset * a.itemsize
        self.t = torch.zeros(self.skip + a.nbytes, dtype=torch.uint8, device="cuda")
        if a.nbytes:
            self.t[self.skip:].copy_(torch.from_numpy(a.view(np.uint8).copy()))
        self.ptr = self.t.data_ptr() + self.skip

    @classmethod
    def garbage(cls, count, dtype, offset=0):
        """Output buffer filled with 0xA5 bytes, so an element never written shows."""
        dtype = np.dtype(dtype)
        return cls(np.full(count * dtype.itemsize, 0xA5, np.uint8).view(dtype), offset)

    def host(self):
        torch.cuda.synchronize()
        return self.t[self.skip:].cpu().numpy().view(self.dtype).copy()


def bits(a):
    a = np.ascontiguousarray(a)
    return a.view({1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize])


def assert_same_bits(got, want, what=""):
    got, want = bits(got), bits(want)
    assert got.shape == want.shape, what
    bad = np.flatnonzero(got != want)
    if bad.size:
        i = bad[0]
        pytest.fail(f"{what}: {bad.size} of {got.size} differ; first at {i}: "
                    f"got {got[i]:#x}, want {want[i]:#x}")


# ---- data ------------------------------------------------------------------------

def sample(n, seed=0):
    """float32 values of magnitudes 1e-3..1e3, with (where n allows) a zero
    block, a block whose max/127 underflows to 0, one whose scale is subnormal,
    NaN, +Inf, -Inf, and values near the float32 limit."""
    rng = np.random.default_rng(seed * 7919 + n)
    x = rng.standard_normal(n).astype(F32) * F32(10.0) ** rng.integers(-3, 4, size=n).astype(F32)
    if n >= 1000:
        x[64:128] = 0
        x[128:192] = F32(1e-44)
        x[256:320] = rng.standard_normal(64).astype(F32) * F32(1e-39)
        x[400], x[500], x[600] = np.nan, np.inf, -np.inf
    if n >= 9 * 4096:
        x[4096:8192] = 0
        x[8192:12288] = F32(1e-44)
        x[12288:16384] = rng.standard_normal(4096).astype(F32) * F32(1e-39)
        x[20480 + 17], x[24576 + 5], x[28672 + 100] = np.nan, np.inf, -np.inf
        x[32768:32868] = F32(3e38)
    return x


def as_dtype(x, name):
    """(array of storage bits for the GPU, input for the CPU kernels)."""
    if name == "float32":
        return x, x
    if name == "float16":
        with np.errstate(over="ignore"):
            h = x.astype(np.float16)
        return h, h
    t = torch.from_numpy(x).to(torch.bfloat16)
    return t.view(torch.int16).numpy().view(np.uint16).copy(), t


def residual_for(n):
    return (sample(n, seed=3) * F32(0.01)).astype(F32)


# ---- int8 quantize ----------------------------------------------------------------

def cpu_quantize(x, n, block, stochastic, seed, residual):
    q = np.empty(n, np.int8)
    s = np.empty(-(-n // block), F32)
    if n:  # (an empty torch tensor with stride 0 is refused as non-contiguous)
        _C._quantize_int8(x, block, stochastic, seed, residual, q, s)
    return q, s


def gpu_quantize(xbits, dtype, n, block, stochastic, seed, residual, offset=0):
    x = Dev(xbits, offset)
    r = Dev(residual, offset) if residual is not None else None
    q = Dev.garbage(n, np.int8, offset)
    s = Dev.garbage(-(-n // block), F32)
    C.quantize_int8(x.ptr, DTYPES[dtype], n, block, stochastic, seed, r.ptr if r else None,
                    q.ptr, s.ptr, stream())
    return q.host(), s.host(), (r.host() if r else None)


@pytest.mark.parametrize("offset", [0, 1])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("count", COUNTS)
@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("dtype", QUANT_DTYPES)
def test_quantize_bitwise(dtype, block, count, mode, offset):
    stochastic, feedback = mode.startswith("stochastic"), mode.endswith("feedback")
    xbits, xcpu = as_dtype(sample(count), dtype)
    res = residual_for(count) if feedback else None
    cpu_res = res.copy() if feedback else None
    q, s = cpu_quantize(xcpu, count, block, stochastic, SEED, cpu_res)
    gq, gs, gres = gpu_quantize(xbits, dtype, count, block, stochastic, SEED, res, offset)
    assert_same_bits(gq, q, "q")
    assert_same_bits(gs, s, "scales")
    if feedback:
        assert_same_bits(gres, cpu_res, "residual")


def test_quantize_special_blocks():
    """One 64-block each: all zero, max/127 underflowing, subnormal scale, NaN, Inf."""
    x = np.random.default_rng(5).standard_normal(64 * 6).astype(F32)
    x[0:64] = 0
    x[0:32] = -0.0
    x[64:128] = F32(1e-44)
    x[128:192] *= F32(1e-39)
    x[130] = -0.0
    x[200] = np.nan
    x[300] = -np.inf
    res = np.zeros(x.size, F32)
    # v = -0: a zero block keeps it as its residual; in a quantized block q is
    # +0 and the residual -0 - (+0 * scale) = -0 (rintf's -0 would give +0).
    res[0:64] = -0.0
    res[130] = -0.0
    cpu_res = res.copy()
    q, s = cpu_quantize(x, x.size, 64, False, 0, cpu_res)
    gq, gs, gres = gpu_quantize(x, "float32", x.size, 64, False, 0, res)
    assert np.isnan(s[3]) and np.isnan(s[4]) and s[0] == 0 and s[1] == 0
    assert_same_bits(gq, q, "q")
    assert_same_bits(gs, s, "scales")
    assert_same_bits(gres, cpu_res, "residual")


# ---- dequantize ------------------------------------------------------------------

def as_f32(u32):
    return np.asarray(u32, np.uint32).view(F32)


@pytest.mark.parametrize("offset", [0, 1])
@pytest.mark.parametrize("accumulate", [False, True])
@pytest.mark.parametrize("count", COUNTS)
@pytest.mark.parametrize("block", BLOCKS)
def test_dequantize_bitwise(block, count, accumulate, offset):
    q, s = cpu_quantize(sample(count), count, block, False, 0, None)
    if s.size > 6:  # NaN payloads, infinities, zero and subnormal scales
        s[1:7] = as_f32([0xFF800001, 0x7FC01234, 0x7F800000, 0xFF800000, 0, 0x00000005])
    acc = sample(count, seed=11)
    if count >= 1000:
        acc[10:14] = as_f32([0x7FC00123, 0xFF800005, 0x7F800000, 0xFF800000])
        acc[70:74] = as_f32([0x7FC00123, 0xFF800005, 0x7F800000, 0xFF800000])  # NaN-scale block
    want = acc.copy() if accumulate else np.empty(count, F32)
    _C._dequantize_int8(q, s, block, want, accumulate)
    out = Dev(acc, offset) if accumulate else Dev.garbage(count, F32, offset)
    qd, sd = Dev(q, offset), Dev(s)
    C.dequantize_int8(qd.ptr, sd.ptr, count, block, out.ptr, accumulate, stream())
    assert_same_bits(out.host(), want, "out")


# ---- fused reduce + requantize -------------------------------------------------

def sources(nsrc, n, block):
    out = []
    for r in range(nsrc):
        x = sample(n, seed=r + 1)
        if r == 1 and n > 70:
            x[70] = np.nan  # one source's block turns the sum's block into NaN
        out.append(cpu_quantize(x, n, block, r % 2 == 1, 1000 + r, None))
    return out


def cpu_reduce_requantize(srcs, n, block, divisor, stochastic, seed, residual):
    acc = np.empty(n, F32)
    for r, (q, s) in enumerate(srcs):
        _C._dequantize_int8(q, s, block, acc, r > 0)
    if divisor != 1:
        acc = (acc / F32(divisor)).astype(F32)
    return cpu_quantize(acc, n, block, stochastic, seed, residual)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("count, offset", [(31, 0), (1000, 0), (1000, 1), (100003, 0)])
@pytest.mark.parametrize("nsrc", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("divide", [False, True])
def test_reduce_requantize_bitwise(divide, nsrc, count, offset, block, mode):
    stochastic, feedback = mode.startswith("stochastic"), mode.endswith("feedback")
    divisor = float(nsrc) if divide else 1.0
    srcs = sources(nsrc, count, block)
    res = residual_for(count) if feedback else None
    cpu_res = res.copy() if feedback else None
    q, s = cpu_reduce_requantize(srcs, count, block, divisor, stochastic, SEED, cpu_res)

    dq = [(Dev(qr, offset), Dev(sr)) for qr, sr in srcs]
    r = Dev(res, offset) if feedback else None
    qo = Dev.garbage(count, np.int8, offset)
    so = Dev.garbage(-(-count // block), F32)
    C.reduce_requantize_int8([a.ptr for a, _ in dq], [b.ptr for _, b in dq], count, block,
                             divisor, stochastic, SEED, r.ptr if r else None, qo.ptr, so.ptr,
                             stream())
    assert_same_bits(qo.host(), q, "q_out")
    assert_same_bits(so.host(), s, "s_out")
    if feedback:
        assert_same_bits(r.host(), cpu_res, "residual")


@pytest.mark.parametrize("block", [64, 4096])
@pytest.mark.parametrize("count, offset", [(1000, 0), (1000, 1), (100003, 0)])
@pytest.mark.parametrize("nsrc, dense_index", [(1, 0), (2, 0), (2, 1), (5, 3)])
@pytest.mark.parametrize("feedback", [False, True])
def test_reduce_requantize_dense_bitwise(feedback, nsrc, dense_index, count, offset, block):
    # The owner's own slice as a float32 source in its rank-order slot: the
    # CPU kernel's bytes, scales and residual bits.
    srcs = sources(nsrc, count, block)
    dense = sample(count, seed=5)
    res = residual_for(count) if feedback else None
    cpu_res = res.copy() if feedback else None
    q = np.empty(count, np.int8)
    s = np.empty(-(-count // block), F32)
    _C._reduce_requantize_int8([a for a, _ in srcs], [b for _, b in srcs], block, float(nsrc), False,
                               0, cpu_res, q, s, dense=dense, dense_index=dense_index)
    dq = [(Dev(qr, offset), Dev(sr)) for qr, sr in srcs]
    dd = Dev(dense, offset)
    r = Dev(res, offset) if feedback else None
    qo = Dev.garbage(count, np.int8, offset)
    so = Dev.garbage(-(-count // block), F32)
    qptrs, sptrs = [a.ptr for a, _ in dq], [b.ptr for _, b in dq]
    qptrs[dense_index] = sptrs[dense_index] = 0  # not read
    C.reduce_requantize_int8(qptrs, sptrs, count, block, float(nsrc), False, 0, r.ptr if r else None,
                             qo.ptr, so.ptr, stream(), dense=dd.ptr, dense_index=dense_index)
    assert_same_bits(qo.host(), q, "q_out")
    assert_same_bits(so.host(), s, "s_out")
    if feedback:
        assert_same_bits(r.host(), cpu_res, "residual")


@pytest.mark.parametrize("feedback", [False, True])
@pytest.mark.parametrize("dtype", QUANT_DTYPES)
def test_widen_to_float32_bitwise(dtype, feedback):
    n = 100003
    gpu_in, cpu_in = as_dtype(sample(n, seed=9), dtype)
    res = residual_for(n) if feedback else None
    want = np.asarray(cpu_in.float() if hasattr(cpu_in, "float") else cpu_in, F32).astype(F32)
    if feedback:
        want = (want + res).astype(F32)
    out, x = Dev.garbage(n, F32), Dev(gpu_in)
    r = Dev(res) if feedback else None  # kept: a freed buffer's memory is handed out again
    C.widen_to_float32(x.ptr, DTYPES[dtype], n, r.ptr if r else None, out.ptr, stream())
    got = out.host()
    # NaN payloads may differ (x + r with a NaN: which operand x86 returns is
    # the compiler's choice); a NaN turns its whole block NaN downstream.
    assert np.array_equal(np.isnan(got), np.isnan(want))
    keep = ~np.isnan(want)
    assert_same_bits(got[keep], want[keep], "widened")


# ---- reduce, divide --------------------------------------------------------------

def storage(name):
    return np.uint16 if name == "bfloat16" else np.dtype(name)


def reduce_data(name, n, seed):
    rng = np.random.default_rng(seed)
    if name in ("float16", "bfloat16"):
        # Every bit pattern (subnormals, infinities, NaN payloads), shuffled.
        pats = np.arange(65536, dtype=np.uint32).astype(np.uint16)
        return rng.permutation(np.resize(pats, max(n, 65536)))[:n].copy()
    if name in ("float32", "float64"):
        x = (rng.standard_normal(n) * 10.0 ** rng.integers(-30, 30, n)).astype(name)
        specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-40, 3.4e38],
                            dtype=name)
        if name == "float32":  # NaN payloads and a signalling NaN
            specials = np.concatenate([specials, as_f32([0x7FC01234, 0xFF800001])])
        k = min(n, 3 * specials.size)
        x[rng.choice(n, k, replace=False)] = rng.choice(specials, k)
        return x
    info = np.iinfo(name)
    return rng.integers(info.min, info.max, n, dtype=name, endpoint=True)


@pytest.mark.parametrize("offset", [0, 1])
@pytest.mark.parametrize("count", (0, 1, 31, 1000, 65536, 100003))
@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_reduce_bitwise(dtype, op, count, offset):
    a, b = reduce_data(dtype, count, 1), reduce_data(dtype, count, 2)
    want = np.empty(count, storage(dtype))
    _C.kernels.reduce(want, a, b, DTYPES[dtype], OPS[op])
    da, db, dd = Dev(a, offset), Dev(b, offset), Dev.garbage(count, storage(dtype), offset)
    C.reduce(dd.ptr, da.ptr, db.ptr, count, DTYPES[dtype], OPS[op], stream())
    assert_same_bits(dd.host(), want, "dst")
    # In place: dst is a.
    C.reduce(da.ptr, da.ptr, db.ptr, count, DTYPES[dtype], OPS[op], stream())
    assert_same_bits(da.host(), want, "dst == a")


@pytest.mark.parametrize("divisor", [3.0, 0.0, 1e-3, -7.5])
@pytest.mark.parametrize("count", (1, 31, 65536, 100003))
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
def test_divide_bitwise(dtype, count, divisor):
    x = reduce_data(dtype, count, 3)
    want = x.copy()
    _C.kernels.divide(want, DTYPES[dtype], divisor)
    d = Dev(x)
    C.divide(d.ptr, count, DTYPES[dtype], divisor, stream())
    assert_same_bits(d.host(), want, "dst")


# ---- reduce_n ------------------------------------------------------------------

EPS = {"float32": (2.0 ** -24, 2.0 ** -24), "float64": (2.0 ** -53, 2.0 ** -53),
       "float16": (2.0 ** -11, 2.0 ** -24), "bfloat16": (2.0 ** -8, 2.0 ** -24)}


def to_f64(name, x):
    if name == "bfloat16":
        return (x.astype(np.uint32) << 16).view(F32).astype(np.float64)
    return x.astype(np.float64)


def from_f32(name, x):
    if name == "bfloat16":
        return torch.from_numpy(x.astype(F32)).to(torch.bfloat16).view(torch.int16).numpy() \
            .view(np.uint16)
    return x.astype(name)


@pytest.mark.parametrize("offset", [0, 1])
@pytest.mark.parametrize("nsrc", [1, 2, 3, 5, 16])
@pytest.mark.parametrize("op", ["sum", "prod", "min", "max"])
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16", "int32"])
def test_reduce_n(dtype, op, nsrc, offset):
    n = 10007
    rng = np.random.default_rng(nsrc)
    if dtype == "int32":
        srcs = [rng.integers(-2**31, 2**31, n, dtype=np.int32) for _ in range(nsrc)]
    else:
        lo, hi = (0.7, 1.4) if op == "prod" else (0.5, 2.0)
        srcs = []
        for _ in range(nsrc):
            v = rng.uniform(lo, hi, n) * (1 if op == "prod" else rng.choice([-1, 1], n))
            srcs.append(from_f32(dtype, v.astype(F32)) if dtype != "float64" else v)
    devs = [Dev(s, offset) for s in srcs]
    out = Dev.garbage(n, storage(dtype), offset)
    C.reduce_n(out.ptr, [d.ptr for d in devs], n, DTYPES[dtype], OPS[op], stream())
    got = out.host()

    if nsrc == 2:  # bitwise the two-input reduce (and so the CPU's)
        want = np.empty(n, storage(dtype))
        _C.kernels.reduce(want, srcs[0], srcs[1], DTYPES[dtype], OPS[op])
        assert_same_bits(got, want, "reduce_n(2) vs reduce")
    if dtype == "int32":  # wraps like numpy, in order
        want = srcs[0].copy()
        with np.errstate(over="ignore"):
            for s in srcs[1:]:
                want = {"sum": np.add, "prod": np.multiply, "min": np.minimum,
                        "max": np.maximum}[op](want, s).astype(np.int32)
        assert_same_bits(got, want, "int32")
        return
    x = np.stack([to_f64(dtype, s) for s in srcs])
    ref = {"sum": x.sum(0), "prod": x.prod(0), "min": x.min(0), "max": x.max(0)}[op]
    g = to_f64(dtype, got)
    if op in ("min", "max"):  # selection: exact
        np.testing.assert_array_equal(g, ref)
        return
    eps_out, eps_acc = EPS[dtype]
    if op == "sum":
        tol = 2 * eps_out * np.abs(ref) + 2 * nsrc * eps_acc * np.abs(x).sum(0)
    else:
        tol = (2 * eps_out + 2 * nsrc * eps_acc) * np.abs(ref)
    worst = np.max(np.abs(g - ref) - tol)
    assert worst <= 0, f"reduce_n {dtype} {op}: {worst:g} past the tolerance"


def test_reduce_n_sixteen_sources_in_order():
    # Float32 sum is not associative: fold order is source order.
    n = 4096
    rng = np.random.default_rng(0)
    srcs = [(rng.standard_normal(n) * 10.0 ** rng.integers(-8, 8, n)).astype(F32)
            for _ in range(16)]
    want = srcs[0].copy()
    for s in srcs[1:]:
        want = (want + s).astype(F32)
    devs = [Dev(s) for s in srcs]
    out = Dev.garbage(n, F32)
    C.reduce_n(out.ptr, [d.ptr for d in devs], n, DTYPES["float32"], OPS["sum"], stream())
    assert_same_bits(out.host(), want, "16-source sum")


@pytest.mark.parametrize("in_place", [False, True])
@pytest.mark.parametrize("offset", [0, 1])
@pytest.mark.parametrize("shape", [(1, 1), (2, 2), (3, 1), (2, 4), (16, 16)])
@pytest.mark.parametrize("op", ["sum", "avg", "max", "prod"])
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16", "int32"])
def test_reduce_n_to(dtype, op, shape, offset, in_place):
    # Every target holds bitwise what reduce_n (then divide, for avg) gives,
    # a target may be a source, and for two sources it is the CPU's result.
    if op == "avg" and dtype == "int32":
        pytest.skip("avg needs a floating dtype")
    nsrc, ndst = shape
    n = 10007
    srcs = [reduce_data(dtype, n, 40 + i) for i in range(nsrc)]
    divisor = float(nsrc)
    devs = [Dev(s, offset) for s in srcs]
    want_dev = Dev.garbage(n, storage(dtype), offset)
    C.reduce_n(want_dev.ptr, [d.ptr for d in devs], n, DTYPES[dtype], OPS[op], stream())
    if op == "avg":
        C.divide(want_dev.ptr, n, DTYPES[dtype], divisor, stream())
    want = want_dev.host()
    if nsrc == 2:
        cpu = np.empty(n, storage(dtype))
        _C.kernels.reduce(cpu, srcs[0], srcs[1], DTYPES[dtype], OPS[op])
        if op == "avg":
            _C.kernels.divide(cpu, DTYPES[dtype], divisor)
        assert_same_bits(want, cpu, "reduce_n + divide vs the CPU")
    outs = [Dev.garbage(n, storage(dtype), offset) for _ in range(ndst)]
    targets = [o.ptr for o in outs]
    if in_place:
        targets[0] = devs[0].ptr
    C.reduce_n_to(targets, [d.ptr for d in devs], n, DTYPES[dtype], OPS[op], divisor, stream())
    got = [devs[0].host() if in_place else outs[0].host()] + [o.host() for o in outs[1:]]
    for i, g in enumerate(got):
        assert_same_bits(g, want, f"target {i}")


def test_nondefault_stream():
    s = torch.cuda.Stream()
    x = sample(100003)
    with torch.cuda.stream(s):
        q, sc = cpu_quantize(x, x.size, 64, False, 0, None)
        gq, gs, _ = gpu_quantize(x, "float32", x.size, 64, False, 0, None)
    assert_same_bits(gq, q, "q")
    assert_same_bits(gs, sc, "scales")


def test_device_info():
    assert C.device_count() == torch.cuda.device_count()
    assert C.device_name(0) == torch.cuda.get_device_name(0)
    assert C.driver_version() > 0
    assert pycomm.__version__
