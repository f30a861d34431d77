"""CPU reduction kernels (_C.kernels): every ISA this CPU has, every dtype and op.

Results are checked bitwise against numpy where the math is exactly specified
(integers wrap; float ops are elementwise; half types are float32 math rounded
once to nearest-even), and every ISA path must be bitwise identical to the
baseline, NaNs included.
"""

import numpy as np
import pytest

from pycomm import _C
from isa_paths import AVAILABLE, ISAS, K, isa  # noqa: F401 - isa is a fixture

# Codes from csrc/common/dtype.h, as the core exports them.
DTYPES = dict(_C.DTYPES)
OPS = dict(_C.REDUCE_OPS)
FLOATS = ("float32", "float64", "float16", "bfloat16")
LENGTHS = (0, 1, 7, 31, 33, 1000, 4099)  # vector tails for 4-, 8- and 16-wide lanes
AVG_DIVISOR = 3.0


# ---- bfloat16 and float16 helpers (bfloat16 is kept as uint16 bit patterns) --

def bf16_to_f32(u16):
    return (u16.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16(f32):
    """Round to nearest even; NaN -> 0x7FC0 (as torch's c10::BFloat16)."""
    u = np.ascontiguousarray(f32, dtype=np.float32).view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(np.isnan(f32), np.uint16(0x7FC0), r)


def storage_dtype(name):
    return np.uint16 if name == "bfloat16" else np.dtype(name)


def widen(name, x):
    """Values as numpy computes with them: float32 for half types."""
    if name == "bfloat16":
        return bf16_to_f32(x)
    if name == "float16":
        return x.astype(np.float32)
    return x


def narrow(name, x):
    if name == "bfloat16":
        return f32_to_bf16(x)
    if name == "float16":
        return x.astype(np.float16)
    return x


NP_OPS = {"sum": np.add, "prod": np.multiply, "min": np.minimum, "max": np.maximum,
          "avg": np.add}


def reference(name, op, a, b):
    with np.errstate(all="ignore"):
        r = narrow(name, NP_OPS[op](widen(name, a), widen(name, b)))
        if op == "avg" and name in FLOATS:  # the sum is stored (rounded) first
            r = widen(name, r)
            r = narrow(name, r / r.dtype.type(AVG_DIVISOR))
        return r


# ---- data -------------------------------------------------------------------

SPECIALS = {
    "float32": [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-40, 3.4e38, 1.0],
    "float64": [0.0, -0.0, np.inf, -np.inf, np.nan, 5e-324, -1e-310, 1.7e308, 1.0],
}


def random_data(name, n, rng, specials=True):
    if name in ("float16", "bfloat16"):
        # Every bit pattern: subnormals, infinities and NaN payloads included.
        bits = rng.integers(0, 1 << 16, n, dtype=np.uint16)
        return bits if name == "bfloat16" else bits.view(np.float16)
    if name in ("float32", "float64"):
        x = (rng.standard_normal(n) * 10.0 ** rng.integers(-3, 4, n)).astype(name)
        if specials and n:
            idx = rng.integers(0, n, max(1, n // 16))
            x[idx] = rng.choice(np.array(SPECIALS[name], dtype=name), idx.size)
        return x
    info = np.iinfo(name)
    return rng.integers(info.min, info.max, n, dtype=name, endpoint=True)


def half_ties(name, n, rng):
    """Pairs whose exact float32 sum lies halfway between two half values."""
    a = random_data(name, n, rng)
    af = widen(name, a)
    af = np.where(np.isfinite(af) & (af != 0), af, np.float32(1.5))
    a = narrow(name, af)
    # One ulp of a in the half format, halved: representable in float32.
    mant_bits = 10 if name == "float16" else 7
    exp = np.frexp(np.abs(widen(name, a)))[1].astype(np.int32)
    half_ulp = np.ldexp(np.float32(1.0), exp - 2 - mant_bits).astype(np.float32)
    b = narrow(name, half_ulp)  # exact in both formats for these exponents
    return a, b


def assert_same(name, got, want):
    """Bitwise equal, except that NaN payloads are only checked to be NaN."""
    assert got.shape == want.shape
    if name in FLOATS:
        gv, wv = widen(name, got), widen(name, want)
        nan = np.isnan(wv)
        np.testing.assert_array_equal(np.isnan(gv), nan)
        bits = np.uint16 if name in ("float16", "bfloat16") else (
            np.uint32 if name == "float32" else np.uint64)
        np.testing.assert_array_equal(got.view(bits)[~nan], want.view(bits)[~nan])
    else:
        np.testing.assert_array_equal(got, want)


def run(name, op, dst, a, b):
    K.reduce(dst, a, b, DTYPES[name], OPS[op])
    if op == "avg" and name in FLOATS:
        K.divide(dst, DTYPES[name], AVG_DIVISOR)
    return dst


# ---- tests ------------------------------------------------------------------

@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("name", list(DTYPES))
def test_matches_numpy(isa, name, op):
    """avg is reduce(avg) then divide() for floats; for integers, reduce(avg) is a sum."""
    rng = np.random.default_rng([DTYPES[name], OPS[op]])
    for n in LENGTHS:
        a, b = random_data(name, n, rng), random_data(name, n, rng)
        want = reference(name, op, a, b)
        assert_same(name, run(name, op, np.empty_like(a), a, b), want)
        # dst may be either input.
        a2, b2 = a.copy(), b.copy()
        assert_same(name, run(name, op, a2, a2, b2), want)
        a2 = a.copy()
        assert_same(name, run(name, op, b2, a2, b2), want)


@pytest.mark.parametrize("name", ["float16", "bfloat16"])
def test_half_rounding_ties(isa, name):
    rng = np.random.default_rng(7)
    a, b = half_ties(name, 4099, rng)
    for op in ("sum", "avg"):
        assert_same(name, run(name, op, np.empty_like(a), a, b), reference(name, op, a, b))


@pytest.mark.parametrize("name", ["float16", "bfloat16"])
def test_half_exhaustive(isa, name):
    """Every half value times factors that make results round (ties, subnormals,
    overflow to inf) or pass through unchanged (widen/narrow round trip)."""
    x = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    if name == "float16":
        x = x.view(np.float16)
    for factor in (1.0, -1.0, 0.5, 2.0 ** -5, 2.0 ** -11, 2.0, 1.0 + 2.0 ** -10, 3.0):
        y = narrow(name, np.full(x.size, factor, np.float32))
        assert_same(name, run(name, "prod", np.empty_like(x), x, y),
                    reference(name, "prod", x, y))
    assert_same(name, run(name, "avg", np.empty_like(x), x, x), reference(name, "avg", x, x))


@pytest.mark.parametrize("name", FLOATS)
@pytest.mark.parametrize("op", ["min", "max"])
def test_nan_propagates(isa, name, op):
    n = 37
    a = narrow(name, np.linspace(-3, 3, n, dtype=np.float32)) if name in (
        "float16", "bfloat16") else np.linspace(-3, 3, n).astype(name)
    b = a[::-1].copy()
    nan = narrow(name, np.array([np.nan], np.float32))[0] if name in (
        "float16", "bfloat16") else np.array(np.nan, name)
    a[::3] = nan
    b[1::3] = nan
    want_nan = np.zeros(n, bool)
    want_nan[::3] = want_nan[1::3] = True
    got = run(name, op, np.empty_like(a), a, b)
    np.testing.assert_array_equal(np.isnan(widen(name, got)), want_nan)
    assert_same(name, got, reference(name, op, a, b))


def test_min_max_signed_zero_like_numpy(isa):
    a = np.array([0.0, -0.0] * 20, np.float32)
    b = -a
    for op in ("min", "max"):
        got = run("float32", op, np.empty_like(a), a, b)
        np.testing.assert_array_equal(np.signbit(got), np.signbit(NP_OPS[op](a, b)))


@pytest.mark.parametrize("name", list(DTYPES))
def test_isas_bitwise_identical(name):
    """Every ISA gives the same bytes as baseline, NaN payloads and tails included."""
    if len(AVAILABLE) < 2:
        pytest.skip("only one ISA on this CPU")
    rng = np.random.default_rng(100 + DTYPES[name])
    n = 4099
    a, b = random_data(name, n, rng), random_data(name, n, rng)
    if name in ("float32", "float64"):
        # NaNs with different payloads and signs on both sides.
        bits = np.uint32 if name == "float32" else np.uint64
        nan_bits = a.view(bits)[:64] | np.array(np.nan, name).view(bits)
        a[:64] = (nan_bits ^ rng.integers(0, 2, 64).astype(bits) << bits(8 * a.itemsize - 1)
                  ).view(name)
        b[32:96] = np.array(-np.nan, name)
    if name in ("float16", "bfloat16"):
        ta, tb = half_ties(name, n, rng)
        a, b = np.concatenate([a, ta]), np.concatenate([b, tb])
    before = K.active_isa()
    try:
        for op in OPS:
            if op == "avg" and name not in FLOATS:
                continue
            results = {}
            for isa in AVAILABLE:
                K.set_isa(isa)
                results[isa] = run(name, op, np.empty_like(a), a, b).tobytes()
            for isa in AVAILABLE:
                assert results[isa] == results["baseline"], (isa, op)
    finally:
        K.set_isa(before)


def test_half_nan_is_canonical(isa):
    a = np.array([np.nan] * 20, np.float32)
    h = a.astype(np.float16)
    got = run("float16", "sum", np.empty_like(h), h, h)
    assert (got.view(np.uint16) == 0x7E00).all()
    bf = np.full(20, 0xFFC1, np.uint16)  # negative NaN with a payload
    got = run("bfloat16", "sum", np.empty_like(bf), bf, bf)
    assert (got == 0x7FC0).all()


def test_bf16_helper_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    f = rng.integers(0, 1 << 32, 100000, dtype=np.uint32).view(np.float32)
    f = np.concatenate([f, np.array([np.inf, -np.inf, 3.4e38, -3.4e38, 0.0, -0.0],
                                    np.float32)])
    want = torch.from_numpy(f).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    # NaN is left out: torch itself gives 0x7FC0 (scalar) or 0xFFFF (vectorised).
    ok = ~np.isnan(f)
    np.testing.assert_array_equal(f32_to_bf16(f)[ok], want[ok])


@pytest.mark.parametrize("stream", [False, True])
def test_copy_every_length_and_alignment(isa, stream):
    # The stream copy's head up to dst's vector alignment, its 4-vector body and its tail.
    rng = np.random.default_rng(3)
    src = rng.integers(0, 256, 4 * 4096 + 300, dtype=np.uint8)
    for n in (0, 1, 15, 63, 64, 255, 256, 257, 4099, 3 * 4096 + 7):
        for d_off, s_off in ((0, 0), (1, 0), (0, 3), (17, 5), (63, 62)):
            dst = np.zeros(n + 128, np.uint8)
            K.copy(dst[d_off:d_off + n], src[s_off:s_off + n], stream=stream)
            np.testing.assert_array_equal(dst[d_off:d_off + n], src[s_off:s_off + n])
            assert not dst[:d_off].any() and not dst[d_off + n:].any()  # nothing outside


def test_validation():
    f = np.zeros(8, np.float32)
    with pytest.raises(ValueError):
        K.reduce(f, f, np.zeros(7, np.float32), DTYPES["float32"], OPS["sum"])
    with pytest.raises(ValueError):  # 6 bytes is not a whole number of float32
        K.reduce(np.zeros(6, np.uint8), np.zeros(6, np.uint8), np.zeros(6, np.uint8),
                 DTYPES["float32"], OPS["sum"])
    with pytest.raises(ValueError, match="unknown dtype code 99"):
        K.reduce(f, f, f, 99, OPS["sum"])
    with pytest.raises(ValueError, match="unknown reduction op 99"):
        K.reduce(f, f, f, DTYPES["float32"], 99)
    with pytest.raises(ValueError):
        K.reduce(np.zeros(16, np.float32)[::2], f, f, DTYPES["float32"], OPS["sum"])
    with pytest.raises(ValueError):  # partial overlap
        buf = np.zeros(9, np.float32)
        K.reduce(buf[1:], buf[:8], f, DTYPES["float32"], OPS["sum"])
    with pytest.raises(ValueError, match="dst is not aligned to its 4-byte elements"):
        odd = np.frombuffer(bytearray(36), np.float32, 8, offset=1)
        K.reduce(odd, f, f, DTYPES["float32"], OPS["sum"])
    with pytest.raises(ValueError):
        K.divide(np.zeros(4, np.int32), DTYPES["int32"], 2.0)
    with pytest.raises(ValueError):
        K.set_isa("sse9")
    ro = np.zeros(8, np.float32)
    ro.flags.writeable = False
    with pytest.raises((ValueError, BufferError)):
        K.reduce(ro, f, f, DTYPES["float32"], OPS["sum"])


def test_isa_names():
    assert K.best_isa() in ISAS
    assert K.active_isa() in ISAS
    assert "baseline" in AVAILABLE and K.best_isa() == AVAILABLE[-1]
    before = K.active_isa()
    for isa in ISAS:
        assert K.set_isa(isa) == (isa in AVAILABLE)
    K.set_isa(before)


def test_env_override_caps_at_cpu():
    """PYCOMM_ISA picks the ISA at import; asking for more than the CPU has is capped."""
    import os
    import subprocess
    import sys

    code = "from pycomm import _C; print(_C.kernels.active_isa())"
    for want in ISAS:
        env = dict(os.environ, PYCOMM_ISA=want)
        out = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                             capture_output=True, text=True).stdout.strip()
        expect = want if want in AVAILABLE else AVAILABLE[-1]
        assert out == expect
