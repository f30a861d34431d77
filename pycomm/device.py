"""GPU buffers as the Communicator hands them to the native core: a device
pointer, an element count, a dtype code and the caller's current stream.

torch CUDA tensors are read directly (any dtype pycomm has, bfloat16
included); anything else with ``__cuda_array_interface__`` (CuPy, Numba, ...)
through that, and objects speaking DLPack (JAX, TensorFlow, ...) through
their capsule (pycomm/dlpack.py), on the legacy default stream. The native
side runs the op on a stream of its own, after the caller's stream, orders
the caller's stream after the op and returns once it is queued (as NCCL
does).
"""
import numpy as np

from . import _C, dlpack

_CODES = dict(_C.DTYPES)  # csrc/common/dtype.h
_TYPESTR = {np.dtype(name).str: code for name, code in _CODES.items() if name != "bfloat16"}


class DeviceBuffer:
    # keep: what must outlive the op besides obj (a DLPack capsule)
    __slots__ = ("obj", "ptr", "count", "dtype", "device", "stream", "keep")
    __pycomm_device__ = True  # how the native point-to-point entry tells it from a host buffer

    def __init__(self, obj, ptr, count, dtype, device, stream, keep=None):
        self.obj, self.ptr, self.count, self.dtype, self.device, self.stream, self.keep = \
            obj, ptr, count, dtype, device, stream, keep


def _torch(x, what):
    import torch

    name = str(x.dtype).replace("torch.", "")
    if name not in _CODES:
        raise TypeError(f"{what} has dtype {x.dtype}, which pycomm does not support")
    if not x.is_contiguous():
        raise ValueError(f"{what} must be contiguous (call .contiguous() first)")
    stream = torch.cuda.current_stream(x.device).cuda_stream
    return DeviceBuffer(x, x.data_ptr(), x.numel(), _CODES[name], x.device.index, stream)


def _cai(x, cai, what):
    ptr, readonly = cai["data"]
    dtype = np.dtype(cai["typestr"])
    if dtype.str not in _TYPESTR:
        raise TypeError(f"{what} has dtype {dtype}, which pycomm does not support")
    shape = tuple(cai["shape"])
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    strides = cai.get("strides")
    if strides is not None and count > 1:
        expected = np.empty(shape, dtype=np.uint8).strides  # C order for 1-byte items ...
        if tuple(strides) != tuple(s * dtype.itemsize for s in expected):  # ... scaled
            raise ValueError(f"{what} must be C-contiguous")
    if readonly:
        raise ValueError(f"{what} is read-only")
    stream = cai.get("stream") or 0  # 1 / 2: the legacy / per-thread default stream, as CUDA spells them
    return DeviceBuffer(x, ptr, count, _TYPESTR[dtype.str], None, stream)


def describe(x, what="x"):
    """A DeviceBuffer when x lives in GPU memory, else None (host memory)."""
    if type(x) is np.ndarray:  # the common case, and failed getattr()s cost a microsecond
        return None
    is_cuda = getattr(x, "is_cuda", None)
    if is_cuda is not None and hasattr(x, "data_ptr"):  # torch: asking it for more attributes costs us
        return _torch(x, what) if is_cuda else None
    cai = getattr(x, "__cuda_array_interface__", None)
    if cai is not None and not hasattr(x, "data_ptr"):
        return _cai(x, cai, what)
    if hasattr(x, "__dlpack_device__") and not hasattr(x, "data_ptr"):
        d = dlpack.describe(x, what)
        if d is not None:
            return DeviceBuffer(x, d.ptr, d.count, _CODES[d.dtype], d.device_id, 1, keep=d.capsule)
    return None


def empty_like(buf, count, float32=False):
    """A new 1-D GPU buffer of `count` elements like buf.obj (torch or CuPy), of
    its dtype or float32."""
    x = buf.obj
    if hasattr(x, "new_empty"):
        if float32:
            import torch
            return x.new_empty((count,), dtype=torch.float32)
        return x.new_empty((count,))
    if buf.keep is not None:
        raise ValueError("pycomm does not allocate GPU memory for objects it reads through DLPack: "
                         "pass out=")
    import cupy  # any other library: CuPy is what __cuda_array_interface__ users usually have

    return cupy.empty(count, dtype="float32" if float32 else x.dtype)


def zeros_like(buf, count):
    """float32 zeros on buf's GPU (error-feedback residuals)."""
    x = buf.obj
    if hasattr(x, "new_zeros"):
        import torch
        return x.new_zeros((count,), dtype=torch.float32)
    try:
        import cupy
    except ImportError:  # a DLPack producer's tensor: residuals in torch, if there
        import torch
        return torch.zeros(count, dtype=torch.float32, device=f"cuda:{index_of(buf)}")
    with cupy.cuda.Device(index_of(buf)):
        return cupy.zeros(count, dtype="float32")


def index_of(buf):
    """The GPU buf lives on."""
    if buf.device is not None:
        return buf.device
    x = buf.obj
    dev = getattr(x, "device", None)
    return getattr(dev, "id", 0) if dev is not None else 0


def available():
    """Whether this build can take GPU buffers."""
    return _C.cuda.built() if hasattr(_C, "cuda") else False
