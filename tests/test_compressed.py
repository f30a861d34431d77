"""Compressed (int8) collectives: the real-rank programs (ranks/compressed.py)
on 1-4 ranks and both transports, the owner's fused kernel against its
definition, the error for simulated world sizes up to 64, ErrorFeedback's
state, and argument checking on a world of one."""
import numpy as np
import pytest

import pycomm
from pycomm import _C
from isa_paths import isa  # noqa: F401 - a fixture


@pytest.mark.parametrize("transport,nranks", [("shm", 1), ("shm", 2), ("shm", 3), ("shm", 4),
                                              ("tcp", 2), ("tcp", 3)])
def test_compressed_ranks(ranks, nranks, transport):
    proc = ranks(nranks, "compressed.py", env={"TEST_TRANSPORT": transport})
    assert f"compressed ok on {nranks} ranks" in proc.stdout


def quantized_sources(nsrc, count, block, seed=0):
    rng = np.random.default_rng(seed)
    qs, ss = [], []
    for _ in range(nsrc):
        q, s = pycomm.quantize_int8(rng.standard_normal(count).astype(np.float32), block_size=block)
        qs.append(q)
        ss.append(s)
    return qs, ss


@pytest.mark.parametrize("nsrc", [1, 2, 5])
@pytest.mark.parametrize("count", [1, 63, 4097, 20000])
@pytest.mark.parametrize("mode", ["rne", "avg+feedback", "stochastic+feedback"])
def test_reduce_requantize_is_its_definition(isa, nsrc, count, mode):
    block = 64
    qs, ss = quantized_sources(nsrc, count, block, seed=count)
    divisor = float(nsrc) if "avg" in mode else 1.0
    stochastic = "stochastic" in mode
    res = np.random.default_rng(1).standard_normal(count).astype(np.float32) * 0.01 \
        if "feedback" in mode else None
    # The definition: dequantize-accumulate in order, divide, quantize.
    acc = np.empty(count, np.float32)
    _C._dequantize_int8(qs[0], ss[0], block, acc, False)
    for q, s in zip(qs[1:], ss[1:]):
        _C._dequantize_int8(q, s, block, acc, True)
    if divisor != 1.0:
        acc = acc / np.float32(divisor)
    want_res = None if res is None else res.copy()
    want_q, want_s = pycomm.quantize_int8(acc, block_size=block, stochastic=stochastic, seed=99,
                                          residual=want_res)
    q = np.empty(count, np.int8)
    s = np.empty(-(-count // block), np.float32)
    _C._reduce_requantize_int8(qs, ss, block, divisor, stochastic, 99, res, q, s)
    assert np.array_equal(q, want_q)
    assert np.array_equal(s.view(np.int32), want_s.view(np.int32))
    if res is not None:
        assert np.array_equal(res.view(np.int32), want_res.view(np.int32))


@pytest.mark.parametrize("dense_index", [0, 1, 4])
@pytest.mark.parametrize("count", [1, 63, 4097, 20000])
def test_reduce_requantize_dense_source(isa, dense_index, count):
    # A float32 source in place of one int8 source, in its rank-order slot,
    # and the result dequantized in the same pass: the owner's own slice.
    block, nsrc = 64, 5
    qs, ss = quantized_sources(nsrc, count, block, seed=count + dense_index)
    dense = np.random.default_rng(dense_index).standard_normal(count).astype(np.float32)
    acc = None
    for i, (q, s) in enumerate(zip(qs, ss)):
        d = dense if i == dense_index else pycomm.dequantize_int8(q, s, block_size=block)
        acc = d.copy() if acc is None else acc + d
    want_q, want_s = pycomm.quantize_int8(acc / np.float32(nsrc), block_size=block)
    q = np.empty(count, np.int8)
    s = np.empty(-(-count // block), np.float32)
    out = np.full(count, np.nan, np.float32)
    junk = [np.full_like(qs[dense_index], 99)] + [np.full_like(ss[dense_index], np.nan)]
    qs[dense_index], ss[dense_index] = junk  # never read
    _C._reduce_requantize_int8(qs, ss, block, float(nsrc), False, 0, None, q, s,
                               dense=dense, dense_index=dense_index, dequant_out=out)
    assert np.array_equal(q, want_q) and np.array_equal(s.view(np.int32), want_s.view(np.int32))
    assert np.array_equal(out, pycomm.dequantize_int8(q, s, block_size=block))
    with pytest.raises(ValueError, match="dense_index"):
        _C._reduce_requantize_int8(qs, ss, block, 1.0, False, 0, None, q, s, dense=dense, dense_index=5)


@pytest.mark.parametrize("block", [32, 64, 4096])
@pytest.mark.parametrize("feedback,stochastic", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("in_place", [False, True])
def test_reduce_requantize_dequant_out(isa, block, feedback, stochastic, in_place):
    # The dequantized output comes out of the rounding pass itself: bitwise
    # what dequantize_int8 gives for q and scales, for NaN, all-zero and
    # partial blocks too, written over the dense source itself or elsewhere.
    count, nsrc = 3 * block + 5, 3
    qs, ss = quantized_sources(nsrc, count, block, seed=block)
    dense = np.random.default_rng(block).standard_normal(count).astype(np.float32)
    dense[block:2 * block] = 0.0
    qs[0][block:2 * block] = qs[2][block:2 * block] = 0  # block 1 sums to zero
    dense[2 * block + 3] = np.nan
    res = np.random.default_rng(1).standard_normal(count).astype(np.float32) * 1e-3 if feedback else None
    if feedback:
        res[block:2 * block] = 0.0
    want_res = None if res is None else res.copy()
    want_q, want_s = np.empty(count, np.int8), np.empty(-(-count // block), np.float32)
    _C._reduce_requantize_int8(qs, ss, block, 2.0, stochastic, 7, want_res, want_q, want_s,
                               dense=dense.copy(), dense_index=1)
    q, s = np.empty_like(want_q), np.empty_like(want_s)
    out = dense if in_place else np.full(count, 5.0, np.float32)
    _C._reduce_requantize_int8(qs, ss, block, 2.0, stochastic, 7, res, q, s, dense=dense, dense_index=1,
                               dequant_out=out)
    assert np.array_equal(q, want_q) and np.array_equal(s.view(np.int32), want_s.view(np.int32))
    if feedback:
        assert np.array_equal(res.view(np.int32), want_res.view(np.int32))
    want_out = pycomm.dequantize_int8(q, s, block_size=block)
    assert np.array_equal(out.view(np.int32), want_out.view(np.int32))
    assert np.isnan(out[2 * block:3 * block]).all() and (out.view(np.int32)[block:2 * block] == 0).all()


def test_error_flat_in_world_size():
    """Two roundings whatever the world size: the error does not grow with it."""
    count, block = 1 << 16, 64
    errs = {}
    for world in (2, 4, 8, 16, 32, 64):
        rng = np.random.default_rng(world)
        xs = [rng.standard_normal(count).astype(np.float32) for _ in range(world)]
        qs, ss = zip(*(pycomm.quantize_int8(x, block_size=block) for x in xs))
        Q = np.empty(count, np.int8)
        S = np.empty(count // block, np.float32)
        _C._reduce_requantize_int8(list(qs), list(ss), block, 1.0, False, 0, None, Q, S)
        got = pycomm.dequantize_int8(Q, S, block_size=block).astype(np.float64)
        ref = np.sum([x.astype(np.float64) for x in xs], axis=0)
        errs[world] = np.sqrt(np.mean((got - ref) ** 2) / np.mean(ref ** 2))
    assert max(errs.values()) <= 0.010, errs
    assert errs[64] <= 1.2 * errs[2], errs


def test_error_feedback_state():
    ef = pycomm.ErrorFeedback()
    assert not ef.initialized and ef.state_dict() == {"layout": None}
    layout = {"op": "allreduce", "count": 10, "world_size": 2, "rank": 1, "block_size": 64, "device": "cpu"}
    worker, owner = ef._buffers(layout, 3)
    assert worker.shape == (10,) and owner.shape == (3,) and not worker.any()
    worker += 1
    state = ef.state_dict()
    worker += 1  # a state_dict is a copy
    other = pycomm.ErrorFeedback()
    other.load_state_dict(state)
    assert np.array_equal(other.worker, np.ones(10, np.float32)) and other._layout == layout
    with pytest.raises(ValueError, match="count 10 -> 11"):
        ef._buffers({**layout, "count": 11}, 3)
    with pytest.raises(ValueError, match="block_size"):
        ef._buffers({**layout, "block_size": 32}, 3)
    with pytest.raises(ValueError, match="shape"):
        other.load_state_dict({**state, "worker": np.zeros(4, np.float32)})
    with pytest.raises(ValueError, match="owner"):
        other.load_state_dict({**state, "owner": None})
    ef.reset()
    assert not ef.initialized
    other.load_state_dict({"layout": None})
    assert not other.initialized


@pytest.fixture
def comm(tmp_path):
    store = pycomm.FileStore(str(tmp_path / "store"))
    c = pycomm.Communicator(0, 1, store, timeout=10)
    yield c
    c.close()
    store.close()


def test_world_of_one(comm):
    x = np.linspace(-3, 3, 1000, dtype=np.float32)
    ef = pycomm.ErrorFeedback()
    got = comm.allreduce(x.copy(), op="avg", compress="int8", error_feedback=ef)
    # The one rank owns everything: its input is never sent, so it is
    # quantized once, as the sum every rank gets (here: itself).
    q, s = pycomm.quantize_int8(x)
    assert np.array_equal(got, pycomm.dequantize_int8(q, s))
    assert ef.worker.shape == (1000,) and ef.owner.shape == (1000,)
    assert not ef.worker.any()  # nothing was quantized for the wire
    assert np.array_equal(comm.reduce_scatter(x, compress="int8"), x)  # no quantization at all
    w = comm.allreduce(x.copy(), compress="int8", async_op=True)
    w.wait()
    half = comm.allreduce(x.astype(np.float16), compress="int8")
    assert half.dtype == np.float32 and half.size == 1000


def test_torch_bfloat16_input(comm):
    torch = pytest.importorskip("torch")
    x = torch.linspace(-1, 1, 300, dtype=torch.bfloat16)
    out = comm.allreduce(x, compress="int8")
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    q, s = pycomm.quantize_int8(x.float().numpy())  # widened exactly, quantized once
    assert np.array_equal(out.numpy(), pycomm.dequantize_int8(q, s))


BAD = [
    (dict(compress="int4"), ValueError, "compress"),
    (dict(compress="int8", op="max"), ValueError, "sum and avg"),
    (dict(compress="int8", block_size=48), ValueError, "power of two"),
    (dict(compress="int8", block_size=64.0), TypeError, "block_size"),
    (dict(compress="int8", error_feedback={}), TypeError, "ErrorFeedback"),
    (dict(compress="int8", seed="7"), TypeError, "seed"),
    (dict(error_feedback=pycomm.ErrorFeedback()), ValueError, "compress='int8'"),
    (dict(stochastic=True), ValueError, "compress='int8'"),
    (dict(compress="int8", out=np.empty(100, np.float64)), TypeError, "float32"),
    (dict(compress="int8", out=np.empty(99, np.float32)), ValueError, "100 elements"),
]


@pytest.mark.parametrize("kwargs,exc,match", BAD, ids=[str(b[0]) for b in BAD])
def test_bad_arguments(comm, kwargs, exc, match):
    x = np.ones(100, np.float32)
    with pytest.raises(exc, match=match):
        comm.allreduce(x, **kwargs)
    assert np.array_equal(comm.allreduce(x.copy(), compress="int8"), x)  # still usable


def test_bad_inputs(comm):
    with pytest.raises(TypeError, match="float32, float16 or bfloat16"):
        comm.allreduce(np.ones(10, np.int32), compress="int8")
    with pytest.raises(TypeError, match="float32, float16 or bfloat16"):
        comm.allreduce(np.ones(10, np.float64), compress="int8", out=np.empty(10, np.float32))
    x = np.ones(200, np.float32)
    with pytest.raises(ValueError, match="overlaps"):
        comm.allreduce(x[:100], compress="int8", out=x[50:150])
    with pytest.raises(ValueError, match="comm.size . out.size"):
        comm.reduce_scatter(np.ones(10, np.float32), compress="int8", out=np.empty(3, np.float32))
    ef = pycomm.ErrorFeedback()
    with pytest.raises(TypeError):
        comm.allreduce(np.ones(10, np.int32), compress="int8", error_feedback=ef)
    assert not ef.initialized  # a refused call allocates nothing
    assert np.array_equal(comm.allreduce(x.copy(), compress="int8"), x)


BAD_ALLGATHER = [
    (dict(compress="int4"), ValueError, "compress"),
    (dict(compress="int8", counts=[100]), ValueError, "counts"),
    (dict(compress="int8", block_size=48), ValueError, "power of two"),
    (dict(compress="int8", seed=1.5), TypeError, "seed"),
    (dict(stochastic=True), ValueError, "compress='int8'"),
    (dict(block_size=32), ValueError, "compress='int8'"),
    (dict(compress="int8", out=np.empty(100, np.float64)), TypeError, "float32 or x's dtype"),
    (dict(compress="int8", out=np.empty(100, np.float16)), TypeError, "float32 or x's dtype"),
    (dict(compress="int8", out=np.empty(99, np.float32)), ValueError, "comm.size . x.size"),
]


@pytest.mark.parametrize("kwargs,exc,match", BAD_ALLGATHER, ids=[str(b[0]) for b in BAD_ALLGATHER])
def test_allgather_bad_arguments(comm, kwargs, exc, match):
    x = np.linspace(-1, 1, 100, dtype=np.float32)
    with pytest.raises(exc, match=match):
        comm.allgather(x, **kwargs)
    q, s = pycomm.quantize_int8(x)
    assert np.array_equal(comm.allgather(x, compress="int8"), pycomm.dequantize_int8(q, s))  # still usable


def test_allgather_bad_inputs(comm):
    with pytest.raises(TypeError, match="float32, float16 or bfloat16"):
        comm.allgather(np.ones(10, np.int32), compress="int8")
    x = np.ones(200, np.float32)
    with pytest.raises(ValueError, match="overlaps"):
        comm.allgather(x[:100], compress="int8", out=x[50:150])
    raw = np.zeros(80, np.uint8)  # x at out's start in another dtype: not x's part of out
    with pytest.raises(ValueError, match="overlaps"):
        comm.allgather(raw[:40].view(np.float16), compress="int8", out=raw.view(np.float32))
    h = np.linspace(-1, 1, 10).astype(np.float16)  # in place: x is out (one rank)
    q, s = pycomm.quantize_int8(h)
    want = pycomm.dequantize_int8(q, s).astype(np.float16)
    assert comm.allgather(h, compress="int8", out=h) is h and np.array_equal(h, want)


def test_allgather_torch_bfloat16(comm):
    torch = pytest.importorskip("torch")
    x = torch.linspace(-1, 1, 300, dtype=torch.bfloat16)
    out = comm.allgather(x, compress="int8")
    assert isinstance(out, torch.Tensor) and out.dtype == torch.bfloat16 and out.shape == (300,)
    q, s = pycomm.quantize_int8(x.float().numpy())
    assert torch.equal(out, torch.from_numpy(pycomm.dequantize_int8(q, s)).to(torch.bfloat16))
    w = comm.allgather(x, compress="int8", out=torch.empty(300), async_op=True)
    w.wait()
