"""DLPack capsules as pycomm reads them: where the data is, how many
elements, which dtype, on which device.

Objects with ``__dlpack__`` and ``__dlpack_device__`` (JAX, TensorFlow,
PaddlePaddle, ...) are described through the capsule their ``__dlpack__``
returns (the unversioned "dltensor" one: a ``DLManagedTensor`` starting with
its ``DLTensor``), read with ctypes; nothing is copied. The capsule stays
with the description: while it lives, the producer keeps the memory.
"""
import ctypes

# DLDeviceType codes (dlpack.h).
CPU, CUDA, CUDA_HOST, CUDA_MANAGED = 1, 2, 3, 13
# DLDataTypeCode (dlpack.h): (code, bits) -> numpy-style name.
_DTYPES = {(2, 32): "float32", (2, 64): "float64", (2, 16): "float16", (4, 16): "bfloat16",
           (0, 8): "int8", (1, 8): "uint8", (0, 32): "int32", (0, 64): "int64"}


class _Device(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _Tensor(ctypes.Structure):  # DLTensor, the first member of DLManagedTensor
    _fields_ = [("data", ctypes.c_void_p), ("device", _Device), ("ndim", ctypes.c_int32),
                ("dtype", _DataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype = ctypes.c_void_p
_capsule_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]


class Described:
    """A DLPack tensor's facts; `capsule` keeps the memory alive."""
    __slots__ = ("capsule", "ptr", "count", "dtype", "device_type", "device_id")


def describe_capsule(capsule, what="x"):
    """Described for a "dltensor" capsule (not consumed: its destructor still
    frees it). TypeError for dtypes pycomm lacks, ValueError when the tensor is
    not C-contiguous."""
    try:
        t = _Tensor.from_address(_capsule_pointer(capsule, b"dltensor"))
    except ValueError:
        raise TypeError(f"{what}: __dlpack__ did not return an unused 'dltensor' capsule") from None
    dt = t.dtype
    name = _DTYPES.get((dt.code, dt.bits)) if dt.lanes == 1 else None
    if name is None:
        raise TypeError(f"{what} has a DLPack dtype (code {dt.code}, {dt.bits} bits, {dt.lanes} lanes) "
                        "pycomm does not support")
    shape = [t.shape[i] for i in range(t.ndim)]
    count = 1
    for s in shape:
        count *= s
    if t.strides and count > 1:  # NULL strides: C order
        expected = 1
        for i in reversed(range(t.ndim)):
            if shape[i] != 1 and t.strides[i] != expected:
                raise ValueError(f"{what} must be C-contiguous")
            expected *= shape[i]
    d = Described()
    d.capsule = capsule
    d.ptr = (t.data or 0) + t.byte_offset
    d.count, d.dtype = count, name
    d.device_type, d.device_id = t.device.device_type, t.device.device_id
    return d


def describe(x, what="x"):
    """Described for an object speaking DLPack whose data is in GPU memory,
    else None. The producer is asked to make the data ready on the legacy
    default stream (stream=1), which the op then follows."""
    try:
        kind, _ = x.__dlpack_device__()
    except Exception:  # not DLPack, or a broken producer: not ours to describe
        return None
    if kind not in (CUDA, CUDA_MANAGED):
        return None
    try:
        capsule = x.__dlpack__(stream=1)
    except TypeError:  # producers from before the stream argument
        capsule = x.__dlpack__()
    return describe_capsule(capsule, what)
