"""pycomm/dlpack.py: DLPack capsules read without a GPU (numpy's capsules
are host memory; the parser does not care), and objects that speak DLPack
described as GPU buffers when their device says CUDA."""
import numpy as np
import pytest

from pycomm import device, dlpack


def test_capsule_facts():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    d = dlpack.describe_capsule(a.__dlpack__())
    assert (d.ptr, d.count, d.dtype, d.device_type) == (a.ctypes.data, 12, "float32", dlpack.CPU)
    for name in ("float64", "float16", "int8", "uint8", "int32", "int64"):
        assert dlpack.describe_capsule(np.zeros(3, name).__dlpack__()).dtype == name
    assert dlpack.describe_capsule(np.zeros(0, np.float32).__dlpack__()).count == 0
    # A view into the middle: the pointer is where its data starts.
    v = a[1:]
    assert dlpack.describe_capsule(v.__dlpack__()).ptr == a.ctypes.data + 16


def test_capsule_refusals():
    with pytest.raises(ValueError, match="C-contiguous"):
        dlpack.describe_capsule(np.arange(10, dtype=np.float32)[::2].__dlpack__())
    with pytest.raises(ValueError, match="C-contiguous"):
        dlpack.describe_capsule(np.zeros((3, 4), np.float32).T.__dlpack__())
    with pytest.raises(TypeError, match="does not support"):
        dlpack.describe_capsule(np.zeros(3, np.complex64).__dlpack__())
    with pytest.raises(TypeError, match="does not support"):
        dlpack.describe_capsule(np.zeros(3, bool).__dlpack__())
    with pytest.raises(TypeError, match="capsule"):
        dlpack.describe_capsule(object())
    # Size-1 dimensions may carry any stride.
    assert dlpack.describe_capsule(np.zeros((4, 1), np.float32)[:, :1].__dlpack__()).count == 4


class FakeDLPack:
    """Speaks DLPack and says its data is on GPU `device_id` (the capsule is
    numpy's: enough to describe, never dereferenced here)."""

    def __init__(self, a, kind=dlpack.CUDA, device_id=0, takes_stream=True):
        self.a, self.kind, self.device_id, self.takes_stream = a, kind, device_id, takes_stream
        self.streams = []

    def __dlpack_device__(self):
        return self.kind, self.device_id

    def __dlpack__(self, **kw):
        if kw and not self.takes_stream:
            raise TypeError("__dlpack__() got an unexpected keyword argument 'stream'")
        self.streams.append(kw.get("stream"))
        return self.a.__dlpack__()


def test_dlpack_objects_are_described():
    a = np.arange(6, dtype=np.int32)
    x = FakeDLPack(a, device_id=1)
    d = device.describe(x)
    # The device is the capsule's (numpy's says 0), not what __dlpack_device__ claimed.
    assert (d.ptr, d.count, d.dtype, d.device, d.stream) == (a.ctypes.data, 6, 6, 0, 1)
    assert d.keep is not None and x.streams == [1]  # ready on the legacy default stream
    old = FakeDLPack(a, takes_stream=False)
    assert device.describe(old).count == 6
    assert device.describe(FakeDLPack(a, kind=dlpack.CPU)) is None
    with pytest.raises(ValueError, match="pass out="):
        device.empty_like(d, 12)
