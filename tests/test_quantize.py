"""Block-wise int8 quantization (pycomm.quantize_int8 / dequantize_int8).

Every ISA this CPU has is checked bitwise against a numpy reference that does
the same float32 operations (RNE and stochastic rounding, error feedback), and
the ISAs against each other; plus the error bounds, the stochastic rounding's
reproducibility and bias, non-finite blocks and argument checking.
"""

import numpy as np
import pytest

import pycomm
from pycomm import _C
from isa_paths import AVAILABLE, ISAS, K, isa  # noqa: F401 - isa is a fixture

COUNTS = (0, 1, 63, 64, 65, 1000, 4099)
BLOCKS = (32, 64, 4096)
MODES = ("rne", "stochastic", "rne+feedback", "stochastic+feedback")

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None


def use_isa(name):
    assert K.set_isa(name)


# ---- numpy reference -----------------------------------------------------------

F32 = np.float32
MAGIC = F32(12582912.0)  # 1.5 * 2^23: (t + MAGIC) - MAGIC rounds to nearest even
GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def uniform24(seed, n):
    i = np.arange(n, dtype=np.uint64)
    z = (np.uint64(seed) ^ (i * GOLDEN)) + GOLDEN
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return (z >> np.uint64(40)).astype(F32) * F32(2.0 ** -24)


def ref_quantize(x32, block, stochastic=False, seed=0, residual=None):
    """(q, scales, residual_after) computed with the kernels' float32 ops."""
    n = x32.size
    v = x32 if residual is None else x32 + residual
    nb = -(-n // block)
    pad = np.zeros(nb * block, F32)
    pad[:n] = v
    vb = pad.reshape(nb, block)
    with np.errstate(all="ignore"):
        absmax = np.abs(vb).max(axis=1) if nb else np.zeros(0, F32)
        bad = ~np.isfinite(vb).all(axis=1)
        scales = (absmax / F32(127.0)).astype(F32)
        zero = scales == 0
        safe = np.where(zero | bad, F32(1), scales).astype(F32)[:, None]
        t = vb / safe
        if stochastic:
            u = np.zeros(nb * block, F32)
            u[:n] = uniform24(seed, n)
            s = np.clip(t + u.reshape(nb, block), F32(-127), F32(127))
            r = (s + MAGIC) - MAGIC
            r = r - (r > s).astype(F32)
        else:
            r = (np.clip(t, F32(-127), F32(127)) + MAGIC) - MAGIC
        res = vb - r * safe
        r[zero | bad] = 0
        res[zero] = vb[zero]
        res[bad] = 0
    scales[bad] = np.nan
    return (r.astype(np.int8).reshape(-1)[:n], scales.astype(F32),
            res.reshape(-1)[:n].astype(F32))


def sample(n, dtype=np.float32, seed=0):
    """Normal values with block magnitudes from 1e-3 to 1e3, a zero run and
    a run of tiny values (a scale that underflows)."""
    rng = np.random.default_rng(seed + n)
    x = rng.standard_normal(n).astype(F32) * F32(10.0) ** rng.integers(-3, 4, size=n).astype(F32)
    x[100:140] = 0
    x[300:340] = F32(1e-44)
    return x.astype(dtype)


def bits(a):
    a = np.ascontiguousarray(a)
    return a.view(np.uint8 if a.dtype.itemsize == 1 else np.uint32 if a.dtype.itemsize == 4
                  else np.uint16)


def assert_same_bits(a, b):
    np.testing.assert_array_equal(bits(a), bits(b))


def run(x, block, mode, seed=1234, residual=None):
    stochastic = mode.startswith("stochastic")
    res = None
    if mode.endswith("feedback"):
        res = residual.copy()
    q, s = pycomm.quantize_int8(x, block_size=block, stochastic=stochastic, seed=seed,
                                residual=res)
    return q, s, res


# ---- bitwise against the reference, every ISA ----------------------------------------

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("count", COUNTS)
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_matches_reference(isa, dtype, count, block, mode):
    x = sample(count, np.dtype(dtype))
    resid = (sample(count, F32, seed=7) * F32(0.01)).astype(F32)
    q, s, res = run(x, block, mode, residual=resid)
    rq, rs, rres = ref_quantize(x.astype(F32), block, mode.startswith("stochastic"), 1234,
                                resid if res is not None else None)
    assert q.dtype == np.int8 and q.shape == (count,)
    assert s.dtype == np.float32 and s.shape == (-(-count // block),)
    assert_same_bits(q, rq)
    assert_same_bits(s, rs)
    if res is not None:
        assert_same_bits(res, rres)


@pytest.mark.skipif(torch is None, reason="torch not installed")
@pytest.mark.parametrize("mode", ["rne", "stochastic+feedback"])
@pytest.mark.parametrize("count", (1, 65, 4099))
@pytest.mark.parametrize("tdtype", ["bfloat16", "float16", "float32"])
def test_torch_inputs(isa, tdtype, count, mode):
    x = torch.from_numpy(sample(count)).to(getattr(torch, tdtype))
    resid = (sample(count, F32, seed=7) * F32(0.01)).astype(F32)
    q, s, res = run(x, 64, mode, residual=resid)
    rq, rs, rres = ref_quantize(x.float().numpy(), 64, mode.startswith("stochastic"), 1234,
                                resid if res is not None else None)
    assert_same_bits(q, rq)
    assert_same_bits(s, rs)
    if res is not None:
        assert_same_bits(res, rres)


def test_isas_identical():
    n = 50_001
    x = sample(n)
    x[5000] = np.nan
    x[9000] = -np.inf
    x[20_000:20_100] = F32(3e38)  # v / scale near the float32 limit
    resid = sample(n, seed=3) * F32(0.1)
    before = K.active_isa()
    try:
        outs = {}
        for name in AVAILABLE:
            use_isa(name)
            got = []
            for dtype in (F32, np.float16):
                with np.errstate(over="ignore"):  # 3e38 -> float16 inf
                    xd = x.astype(dtype)
                for mode in MODES:
                    q, s, res = run(xd, 128, mode, seed=99, residual=resid)
                    got += [q, s] + ([res] if res is not None else [])
            d = np.empty(n, F32)
            _C._dequantize_int8(got[0], got[1], 128, d, False)
            acc = resid.copy()
            _C._dequantize_int8(got[0], got[1], 128, acc, True)
            outs[name] = got + [d, acc]
        for name in AVAILABLE[1:]:
            for a, b in zip(outs[AVAILABLE[0]], outs[name]):
                assert_same_bits(a, b)
    finally:
        K.set_isa(before)


# ---- error bounds, dequantization ------------------------------------------------------

@pytest.mark.parametrize("stochastic", [False, True])
def test_error_bound(isa, stochastic):
    x = sample(10_000)
    q, s = pycomm.quantize_int8(x, block_size=64, stochastic=stochastic, seed=5)
    y = pycomm.dequantize_int8(q, s, block_size=64)
    scale = np.repeat(s, 64)[: x.size]
    err = np.abs(x.astype(np.float64) - y)
    if stochastic:
        assert np.all(err < scale * 1.0001 + 1e-45)
    else:
        assert np.all(err <= scale * 0.5001 + 1e-45)
    assert np.abs(q).max() <= 127


def test_dequantize_reference_and_accumulate(isa):
    x = sample(4099)
    q, s = pycomm.quantize_int8(x, block_size=32)
    want = q.astype(F32) * np.repeat(s, 32)[: q.size]
    assert_same_bits(pycomm.dequantize_int8(q, s, block_size=32), want)
    out = np.full(q.size, F32(7))
    assert pycomm.dequantize_int8(q, s, block_size=32, out=out) is out
    assert_same_bits(out, want)
    acc = sample(4099, seed=1)
    expect = acc + want
    _C._dequantize_int8(q, s, 32, acc, True)
    assert_same_bits(acc, expect)


# float16 limits, subnormals and halfway cases, as float32 products q * scale.
NARROW_EDGES = [65504, 65519, 65520, 65536, 1e9, 6.1e-5, 6.09e-5, 5.96e-8, 2.98e-8, 2.99e-8, 1e-10,
                0.0, -0.0, np.inf, -np.inf, 1 + 2 ** -11, 1 + 3 * 2 ** -11, 1 + 2 ** -8, 1 + 3 * 2 ** -8]


@pytest.mark.parametrize("scale_exp", [-30, -20, -14, 0, 9])
def test_dequantize_narrowed(isa, scale_exp):
    # Out float16 / bfloat16: q * scale in float32, then numpy's / torch's
    # round-to-nearest-even cast, bit for bit; NaN blocks give canonical NaN.
    rng = np.random.default_rng(scale_exp + 40)
    n, block = 5000, 32
    q = rng.integers(-127, 128, n).astype(np.int8)
    s = (rng.random(-(-n // block)) * 2.0 ** scale_exp * 4).astype(F32)
    s[1] = np.nan
    q0 = np.ones(len(NARROW_EDGES) * block, np.int8)  # each edge value: a block of q = 1
    s0 = np.array(NARROW_EDGES, F32)
    for qq, ss, want in ((q, s, q.astype(F32) * np.repeat(s, block)[:n]),
                         (q0, s0, np.repeat(s0, block))):
        finite = ~np.isnan(want)
        h = np.empty(qq.size, np.float16)
        pycomm.dequantize_int8(qq, ss, block_size=block, out=h)
        with np.errstate(over="ignore"):
            assert_same_bits(h[finite], want[finite].astype(np.float16))
        assert np.all(h.view(np.uint16)[~finite] == 0x7E00)
        if torch is not None:
            b = torch.empty(qq.size, dtype=torch.bfloat16)
            pycomm.dequantize_int8(qq, ss, block_size=block, out=b)
            want_b = torch.from_numpy(want).to(torch.bfloat16)
            f = torch.from_numpy(finite)
            assert torch.equal(b.view(torch.int16)[f], want_b.view(torch.int16)[f])
            assert torch.all(b.view(torch.int16)[~f] == 0x7FC0)


# ---- stochastic rounding ---------------------------------------------------------

def test_stochastic_reproducible():
    x = sample(5000)
    a = pycomm.quantize_int8(x, stochastic=True, seed=42)
    b = pycomm.quantize_int8(x, stochastic=True, seed=42)
    c = pycomm.quantize_int8(x, stochastic=True, seed=43)
    assert_same_bits(a[0], b[0])
    assert not np.array_equal(a[0], c[0])
    r1 = pycomm.quantize_int8(x, stochastic=True)  # random seeds
    r2 = pycomm.quantize_int8(x, stochastic=True)
    assert not np.array_equal(r1[0], r2[0])


def test_stochastic_unbiased():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, 4096).astype(F32)
    x[0] = 1.0  # scale = 1/127 in every block
    seeds = 200
    total = np.zeros(x.size)
    for seed in range(seeds):
        q, s = pycomm.quantize_int8(x, block_size=4096, stochastic=True, seed=seed)
        total += pycomm.dequantize_int8(q, s, block_size=4096)
    scale = float(s[0])
    mean_err = total / seeds - x
    # Per element: std of the mean <= scale / (2 sqrt(seeds)); overall mean ~ 0.
    assert abs(mean_err.mean()) < 0.01 * scale
    assert np.abs(mean_err).max() < 0.5 * scale
    # Round to nearest is biased on the same data, for contrast.
    q, s = pycomm.quantize_int8(x, block_size=4096)
    assert np.abs(pycomm.dequantize_int8(q, s, block_size=4096) - x).mean() > 0.2 * scale


# ---- error feedback ----------------------------------------------------------------

@pytest.mark.parametrize("stochastic", [False, True])
def test_error_feedback_identity(isa, stochastic):
    x = sample(4099)
    r = sample(4099, seed=9) * F32(0.05)
    before = r.copy()
    q, s = pycomm.quantize_int8(x, block_size=64, stochastic=stochastic, seed=3, residual=r)
    deq = pycomm.dequantize_int8(q, s, block_size=64)
    assert_same_bits(r, (x + before) - deq)
    # Over steps, the sum of what was sent tracks the sum of the inputs.
    sent = np.zeros(x.size, np.float64)
    r = np.zeros(x.size, F32)
    for step in range(20):
        q, s = pycomm.quantize_int8(x, block_size=64, residual=r)
        sent += pycomm.dequantize_int8(q, s, block_size=64)
    np.testing.assert_allclose(sent + r, 20 * x.astype(np.float64), rtol=1e-4, atol=1e-3)


# ---- non-finite blocks ------------------------------------------------------------------

@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_block(isa, bad):
    x = sample(4099)
    x[70] = bad  # block 1 of 64
    r = np.ones(x.size, F32)
    q, s = pycomm.quantize_int8(x, block_size=64, residual=r)
    y = pycomm.dequantize_int8(q, s, block_size=64)
    assert np.isnan(s[1]) and np.all(q[64:128] == 0)
    assert np.all(np.isnan(y[64:128]))
    assert np.all(np.isfinite(y[:64])) and np.all(np.isfinite(y[128:]))
    assert np.all(r[64:128] == 0)  # reset: the NaN does not stick
    assert np.all(np.isfinite(r))


def test_zero_and_tiny_blocks():
    x = np.zeros(128, F32)
    x[64:] = F32(1e-44)  # max / 127 underflows to 0
    r = np.zeros(128, F32)
    q, s = pycomm.quantize_int8(x, block_size=64, residual=r)
    assert np.all(s == 0) and np.all(q == 0)
    assert_same_bits(r, x)  # nothing sent: it all stays in the residual


# ---- arguments ------------------------------------------------------------------

@pytest.mark.parametrize("block", [0, 16, 48, 8192, -64])
def test_bad_block_size(block):
    with pytest.raises(ValueError):
        pycomm.quantize_int8(np.ones(100, F32), block_size=block)
    q = np.zeros(100, np.int8)
    with pytest.raises(ValueError):
        _C._dequantize_int8(q, np.ones(4, F32), block, np.zeros(100, F32), False)
    with pytest.raises(ValueError):
        _C._quantize_int8(np.ones(100, F32), block, False, 0, None, q, np.ones(4, F32))


def test_bad_arguments():
    x = np.ones(100, F32)
    with pytest.raises(TypeError):
        pycomm.quantize_int8(np.ones(100, np.int32))
    with pytest.raises(TypeError):
        pycomm.quantize_int8(np.ones(100, np.float64))
    with pytest.raises(ValueError):
        pycomm.quantize_int8(x, residual=np.zeros(99, F32))
    with pytest.raises(TypeError):
        pycomm.quantize_int8(x, residual=np.zeros(100, np.float64))
    with pytest.raises(ValueError):
        pycomm.quantize_int8(x, residual=np.zeros(200, F32)[::2])  # not contiguous
    ro = np.zeros(100, F32)
    ro.flags.writeable = False
    with pytest.raises(ValueError):
        pycomm.quantize_int8(x, residual=ro)
    q, s = pycomm.quantize_int8(x)
    with pytest.raises(ValueError):
        pycomm.dequantize_int8(q, s[:1])
    with pytest.raises(TypeError):
        pycomm.dequantize_int8(q.astype(np.int16), s)
    with pytest.raises(ValueError):
        pycomm.dequantize_int8(q, s, out=np.zeros(99, F32))
    with pytest.raises(TypeError):
        pycomm.dequantize_int8(q, s, out=np.zeros(100, np.float64))
    with pytest.raises(ValueError):  # wrong number of scales for the block size
        pycomm.dequantize_int8(q, s, block_size=32)


def test_shapes_and_empty():
    x = sample(12).reshape(3, 4)
    q, s = pycomm.quantize_int8(x, block_size=32)
    assert q.shape == (12,) and s.shape == (1,)
    q, s = pycomm.quantize_int8(np.zeros(0, F32))
    assert q.size == 0 and s.size == 0
    assert pycomm.dequantize_int8(q, s).size == 0
