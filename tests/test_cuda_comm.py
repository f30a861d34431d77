"""Collectives on GPU buffers: 2 and 4 processes sharing one GPU through CUDA
IPC (ranks/cuda_collectives.py). Skipped without a GPU; the refusals that
need none run everywhere."""
import numpy as np
import pytest

import pycomm
from pycomm import _C

try:
    import torch
    HAVE_GPU = torch.cuda.is_available() and _C.cuda.built()
except ImportError:
    torch = None
    HAVE_GPU = False

needs_gpu = pytest.mark.skipif(not HAVE_GPU, reason="needs a CUDA GPU, torch with CUDA and pycomm built with CUDA")


@needs_gpu
@pytest.mark.parametrize("nranks", [1, 2, 4])
def test_cuda_collectives(ranks, nranks):
    proc = ranks(nranks, "cuda_collectives.py", env={"TEST_TRANSPORT": "shm"}, timeout=400)
    assert f"cuda collectives ok on {nranks} ranks" in proc.stdout
    if nranks > 1:
        assert "CUDA IPC" in proc.stdout


@needs_gpu
def test_cuda_across_hosts_stages_through_host(ranks):
    # The ranks are told they are on different hosts: pinned host staging over TCP.
    proc = ranks(2, "cuda_collectives.py", "staged", env={"TEST_TRANSPORT": "tcp"}, timeout=400)
    assert "cuda collectives ok on 2 ranks" in proc.stdout and "pinned host staging" in proc.stdout


@needs_gpu
def test_ddp_on_gpu(ranks):
    # DDP over the "pycomm" backend with the model on the GPU: equal to gloo's
    # run, int8_hook and bf16_hook train (tests/ranks/torch_ddp.py).
    out = ranks(2, "torch_ddp.py", env={"DDP_DEVICE": "cuda", "DDP_STEPS": "60"}, timeout=200).stdout
    assert "ddp ok" in out, out


class FakeCudaArray:
    """Looks like a GPU array (__cuda_array_interface__) without a GPU."""

    def __init__(self, n, typestr="<f4"):
        self.__cuda_array_interface__ = {"data": (4096, False), "shape": (n,), "typestr": typestr,
                                         "strides": None, "version": 3}


def test_gpu_buffers_are_described():
    from pycomm import device
    d = device.describe(FakeCudaArray(10))
    assert (d.ptr, d.count, d.dtype) == (4096, 10, 0)
    assert device.describe(np.zeros(3)) is None
    with pytest.raises(TypeError, match="does not support"):
        device.describe(FakeCudaArray(3, "<c8"))


def test_gpu_refusals_without_sending(tmp_path):
    store = pycomm.FileStore(str(tmp_path / "s"))
    with pycomm.Communicator(0, 1, store, timeout=10) as comm:
        with pytest.raises(TypeError, match="x is in GPU memory but out is not"):
            comm.allreduce(FakeCudaArray(4), out=np.zeros(4, np.float32))
        with pytest.raises(TypeError, match="out is in GPU memory but x is not"):
            comm.allgather(np.zeros(4, np.float32), out=FakeCudaArray(4))
        with pytest.raises(ValueError, match="compress='int8' of GPU buffers is available for allreduce only"):
            comm.reduce_scatter(FakeCudaArray(4), compress="int8")
        with pytest.raises(TypeError, match="out must be float32"):
            comm.allreduce(FakeCudaArray(4), compress="int8", out=FakeCudaArray(4, "<f2"))
        with pytest.raises(ValueError, match="needs out of 4 elements"):
            comm.allgather(FakeCudaArray(4), out=FakeCudaArray(7))
        from test_dlpack import FakeDLPack
        with pytest.raises(ValueError, match="pass out="):
            comm.allgather(FakeDLPack(np.zeros(4, np.float32)))
        if not _C.cuda.built():
            with pytest.raises(TypeError, match="built with CUDA"):
                comm.allreduce(FakeCudaArray(4))
            for p2p in (lambda: comm.send(FakeCudaArray(4), 0), lambda: comm.irecv(FakeCudaArray(4), 0)):
                with pytest.raises(TypeError, match="built with CUDA"):
                    p2p()
        elif not HAVE_GPU:  # a pointer CUDA does not know
            with pytest.raises(ValueError, match="not in GPU memory"):
                comm.allreduce(FakeCudaArray(4))
        x = np.ones(4, np.float32)
        assert np.array_equal(comm.allreduce(x), x)  # still usable
    store.close()
