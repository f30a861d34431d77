"""The CUDA layer on any machine: the build has it when a toolkit was there,
no GPU is not an error, the kernels refuse clearly without one, and their
arguments are checked before any device is touched. (The kernels themselves
are tested on a GPU by test_cuda_kernels.py.)"""
import glob
import os
import shutil
import subprocess
import sys

import pytest

from pycomm import _C

C = _C.cuda
F32, INT8 = _C.DTYPES["float32"], _C.DTYPES["int8"]
SUM = _C.REDUCE_OPS["sum"]


def toolkit_present():
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    nvccs = [os.path.join(home, "bin", "nvcc")] if home else []
    nvccs += ["/usr/local/cuda/bin/nvcc", shutil.which("nvcc") or ""]
    if not any(os.path.isfile(p) for p in nvccs):
        return False
    roots = ([home] if home else []) + ["/usr/local/cuda"]
    return any(glob.glob(os.path.join(r, "**", "libcudart_static.a"), recursive=True)
               for r in roots)


def has_gpu():
    return C.device_count() > 0


@pytest.mark.skipif(os.environ.get("PYCOMM_CUDA", "auto") == "0" or not toolkit_present(),
                    reason="built with PYCOMM_CUDA=0, or no CUDA toolkit here")
def test_built_with_cuda_when_a_toolkit_is_present():
    info = _C.build_info()
    assert info["cuda"] is True
    assert C.built()
    assert {"sm_80", "sm_90"} <= set(info["cuda_archs"])


def test_build_info_keys():
    info = _C.build_info()
    assert info["cuda"] == C.built()
    assert isinstance(info["cuda_archs"], list)
    assert info["cuda_archs"] == (C.archs() if C.built() else [])


@pytest.mark.skipif(has_gpu(), reason="a GPU is present")
def test_no_gpu_is_not_an_error():
    assert C.device_count() == 0
    assert C.no_device_reason()


@pytest.mark.skipif(has_gpu(), reason="a GPU is present")
@pytest.mark.parametrize("call", [
    lambda: C.reduce(256, 256, 256, 4, F32, SUM),
    lambda: C.reduce_n(256, [256, 512], 4, F32, SUM),
    lambda: C.divide(256, 4, F32, 2.0),
    lambda: C.quantize_int8(256, F32, 64, 64, False, 0, None, 512, 768),
    lambda: C.dequantize_int8(256, 512, 64, 64, 768, accumulate=True),
    lambda: C.reduce_requantize_int8([256], [512], 64, 64, 1.0, False, 0, 0, 768, 1024),
    lambda: C.device_name(0),
], ids=["reduce", "reduce_n", "divide", "quantize", "dequantize", "reduce_requantize",
        "device_name"])
def test_kernels_refuse_without_a_gpu(call):
    # Never a crash: RuntimeError (pycomm.CommError is one) that says why.
    with pytest.raises(RuntimeError, match="CUDA"):
        call()


@pytest.mark.parametrize("call, match", [
    (lambda: C.reduce(256, 256, 256, 4, 99, SUM), "dtype"),
    (lambda: C.reduce(256, 256, 256, 4, F32, 9), "op"),
    (lambda: C.reduce(258, 256, 256, 4, F32, SUM), "aligned"),
    (lambda: C.reduce(0, 256, 256, 4, F32, SUM), "null"),
    (lambda: C.reduce(256, 256, 256, -1, F32, SUM), "count"),
    (lambda: C.reduce_n(256, [], 4, F32, SUM), "sources"),
    (lambda: C.reduce_n(256, [256] * 17, 4, F32, SUM), "sources"),
    (lambda: C.divide(256, 4, INT8, 2.0), "floating"),
    (lambda: C.quantize_int8(256, F32, 64, 48, False, 0, None, 512, 768), "block_size"),
    (lambda: C.quantize_int8(256, F32, 64, 64, False, 0, 514, 512, 768), "aligned"),
    (lambda: C.dequantize_int8(256, 512, 64, 8192, 768), "block_size"),
    (lambda: C.reduce_requantize_int8([256], [512, 516], 64, 64, 1.0, False, 0, 0, 768, 1024),
     "same length"),
])
def test_arguments_checked_first(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_quantize_rejects_integer_input():
    with pytest.raises(TypeError):
        C.quantize_int8(256, INT8, 64, 64, False, 0, None, 512, 768)


def test_info_runs():
    out = subprocess.run([sys.executable, "-m", "pycomm.info"], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert out.startswith("pycomm: ")
    assert "cuda: " in out
    assert ("cuda: built" in out) == C.built()
