"""The kernels' instruction-set paths this CPU can run, and a fixture that
runs a test once on each (restoring the active one afterwards)."""
import pytest

from pycomm import _C

K = _C.kernels
ISAS = ("baseline", "avx2", "avx512")


def available_isas():
    before = K.active_isa()
    try:
        return [isa for isa in ISAS if K.set_isa(isa)]
    finally:
        K.set_isa(before)


AVAILABLE = available_isas()


@pytest.fixture(params=ISAS)
def isa(request):
    if request.param not in AVAILABLE:
        pytest.skip(f"CPU lacks {request.param}")
    before = K.active_isa()
    assert K.set_isa(request.param)
    assert K.active_isa() == request.param
    yield request.param
    K.set_isa(before)
