"""A world of one rank needs no launcher; and nothing is left in /dev/shm."""
import gc
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import pycomm


@pytest.mark.parametrize("transport", ["shm", "tcp"])
def test_world_of_one(tmp_path, transport):
    store = pycomm.FileStore(str(tmp_path / "store"))
    with pycomm.Communicator(0, 1, store, transport=transport, timeout=10) as comm:
        assert (comm.rank, comm.size, comm.transport) == (0, 1, transport)
        x = np.arange(10, dtype=np.float32)
        assert comm.allreduce(x, op="avg") is x and np.array_equal(x, np.arange(10))
        out = comm.allreduce(x, op=pycomm.ReduceOp.MAX, out=np.empty_like(x))
        assert np.array_equal(out, x)
        assert np.array_equal(comm.reduce_scatter(x), x)
        assert np.array_equal(comm.allgather(x), x)
        comm.broadcast(x)
        comm.barrier()
        comm.allreduce(x, async_op=True).wait()
    store.close()


def test_allreduce_fast_path_is_the_method(tmp_path):
    # A flat communicator's allreduce is a native function (bindings/fast_call.h)
    # for numpy buffers; every other call goes to Communicator.allreduce. Both
    # must answer alike: results, returned objects and errors.
    store = pycomm.FileStore(str(tmp_path / "store"))
    with pycomm.Communicator(0, 1, store, timeout=10) as comm:
        fast, slow = comm.allreduce, lambda *a, **k: pycomm.Communicator.allreduce(comm, *a, **k)
        assert type(fast).__name__ == "builtin_function_or_method" and fast.__name__ == "allreduce"
        x = np.arange(6, dtype=np.float64)
        for f in (fast, slow):
            y = x.copy()
            assert f(y) is y and f(y, "max") is y and f(y, op="avg", out=None) is y
            out = np.empty_like(y)
            assert f(y, "sum", out) is out and f(x=y, out=out, op="min", timeout=None, async_op=False) is out
            assert np.array_equal(out, x)
            # Through the Python method: another op form, a deadline, async, compression.
            assert f(y, op=pycomm.ReduceOp.SUM, timeout=5.0) is y
            f(y, async_op=True).wait()
            z = np.ones(64, np.float32)
            assert f(z, compress="int8") is z and np.allclose(z, 1, atol=0.02)
        for args, kwargs, error in [
                ((x,), {"out": np.empty(6, np.float32)}, TypeError),   # another dtype
                ((x,), {"out": np.empty(5)}, ValueError),              # another size
                ((x,), {"op": "mean"}, ValueError),                    # no such op
                ((x,), {"op": 3.5}, ValueError),
                ((x,), {"op": ["sum"]}, TypeError),
                (([1.0, 2.0],), {}, TypeError),                        # not a buffer
                ((np.ones(4, bool),), {}, TypeError),                  # no such dtype
                ((np.ones((4, 4))[:, 1],), {}, ValueError),            # not contiguous
                ((x,), {"x": x}, TypeError),                           # x twice
                ((x,), {"outt": x}, TypeError),                        # no such parameter
                ((x,), {"timeout": -1}, ValueError)]:
            messages = set()
            for f in (fast, slow):
                with pytest.raises(error) as e_info:
                    f(*args, **kwargs)
                messages.add(str(e_info.value).replace("Communicator.allreduce()", "allreduce()"))
            assert len(messages) == 1, messages  # word for word
        ro = np.ones(3)
        ro.flags.writeable = False
        for f in (fast, slow):
            with pytest.raises(ValueError, match="read-only"):
                f(ro)
    with pytest.raises(ValueError, match="closed"):
        fast(np.ones(2))
    # The function holds its communicator weakly: a call it cannot take itself says so.
    comm = pycomm.Communicator(0, 1, store, timeout=10)
    fast = comm.allreduce
    del comm
    gc.collect()
    with pytest.raises(ReferenceError, match="gone"):
        fast([1.0])
    store.close()


def test_memory(tmp_path):
    # pycomm.Memory: host memory by address, count and dtype (bindings/memory.h).
    a = np.arange(6, dtype=np.float32)
    m = pycomm.Memory(a.ctypes.data, a.size, "float32", keep=a)
    assert (m.address, m.count, m.dtype, m.nbytes, m.readonly, m.keep) == (a.ctypes.data, 6, "float32", 24, False, a)
    assert repr(m) == f"pycomm.Memory(address={a.ctypes.data:#x}, count=6, dtype='float32')"
    v = np.asarray(m)  # the buffer protocol: a view
    v[0] = 7
    assert a[0] == 7 and v.dtype == np.float32
    assert not np.asarray(pycomm.Memory(a.ctypes.data, 6, "float32", readonly=True)).flags.writeable
    with pytest.raises(BufferError, match="bfloat16"):
        memoryview(pycomm.Memory(a.ctypes.data, 2, "bfloat16"))
    assert pycomm.Memory(0, 0, "int8").count == 0
    assert pycomm.Memory(**{"address": 8, "count": 1, "dtype": "int64"}).nbytes == 8
    for args, error, match in [((-1, 1, "float32"), ValueError, "non-negative"),
                               ((2**70, 1, "float32"), ValueError, "fits a pointer"),
                               ((0, 1, "float32"), ValueError, "null pointer"),
                               ((8, -1, "float32"), ValueError, "count"),
                               ((8, 2**62, "float64"), ValueError, "overflows"),
                               ((8, 1, "f32"), ValueError, "unknown dtype"),
                               ((8, 1, np.float32), TypeError, "name"),
                               ((8.0, 1, "float32"), TypeError, "ints"),
                               ((True, 1, "float32"), TypeError, "ints"),
                               ((8, 1), TypeError, "missing argument dtype")]:
        with pytest.raises(error, match=match):
            pycomm.Memory(*args)
    with pytest.raises(TypeError, match="unexpected keyword"):
        pycomm.Memory(8, 1, "int8", size=1)
    store = pycomm.FileStore(str(tmp_path / "store"))
    with pycomm.Communicator(0, 1, store, timeout=10) as comm:
        x = np.arange(6, dtype=np.float64)
        out = np.zeros_like(x)
        for f in (comm.allreduce, lambda *a, **k: pycomm.Communicator.allreduce(comm, *a, **k)):
            out[:] = 0
            mo = pycomm.Memory(out.ctypes.data, 6, "float64")
            assert f(pycomm.Memory(x.ctypes.data, 6, "float64", readonly=True), out=mo) is mo
            assert np.array_equal(out, x)
            with pytest.raises(ValueError, match="read-only"):
                f(pycomm.Memory(x.ctypes.data, 6, "float64", readonly=True))
            with pytest.raises(TypeError):
                f(pycomm.Memory(x.ctypes.data, 6, "float32"), out=mo)  # another dtype
        # An async op holds the Memory, and the Memory its `keep`.
        y = np.ones(4)
        w = comm.allreduce(pycomm.Memory(y.ctypes.data, 4, "float64", keep=y), async_op=True)
        w.wait()
    store.close()


def test_allreduce_fast_path_gives_way_to_tracing(tmp_path, capsys):
    from pycomm import log
    store = pycomm.FileStore(str(tmp_path / "store"))
    try:
        with pycomm.Communicator(0, 1, store, timeout=10) as comm:
            log.configure("TRACE")
            comm.allreduce(np.ones(2))
            one = np.ones(3, np.float32)
            comm.allreduce(pycomm.Memory(one.ctypes.data, 3, "float32"))
            log.configure("")
            comm.allreduce(np.ones(2))
        err = capsys.readouterr().err
        assert err.count("allreduce float64 x 2 sum") == 1, err
        assert err.count("allreduce float32 x 3 sum") == 1, err
    finally:
        log.configure()
        store.close()


class _SwitchesOnRelease(np.ndarray):
    """An array whose last reference going runs Python code, so the GIL may
    pass to another thread in the middle of a Work letting its buffers go."""

    def __del__(self):
        time.sleep(0)


def test_two_threads_wait_one_work(tmp_path):
    # A torch group's caller and its completion thread both wait on one Work;
    # letting the buffers go twice at once corrupted the heap (PYCOMM_TORCH_OVERLAP=1).
    store = pycomm.FileStore(str(tmp_path / "store"))
    with pycomm.Communicator(0, 1, store, timeout=10) as comm:
        for i in range(3000):
            x = np.full(4, i, np.float32).view(_SwitchesOnRelease)
            w = comm.allreduce(x, async_op=True)
            del x  # the Work's export is the last reference
            other = threading.Thread(target=w.wait)
            other.start()
            assert w.wait()
            other.join()
            assert w.is_completed()
    store.close()


_EXIT_WHILE_THREADS_RUN = """
import sys, threading, numpy as np, pycomm
comm = pycomm.Communicator(0, 1, pycomm.FileStore(sys.argv[1]), timeout=10)
x = np.ones(1024, np.float32)
def loop():
    while True:
        comm.allreduce(x)
        pycomm._C.kernels.reduce(x, x, x, 0, 0)
for _ in range(2):
    threading.Thread(target=loop, daemon=True).start()
"""


def test_exit_while_daemon_threads_run_ops(tmp_path):
    # Python exits while daemon threads are in native calls that released the
    # GIL: taking it back must not std::terminate the process (SIGABRT,
    # "terminate called without an active exception"), as it did in every run.
    for i in range(3):
        proc = subprocess.run([sys.executable, "-c", _EXIT_WHILE_THREADS_RUN, str(tmp_path / f"store{i}")],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr[-2000:]


def test_without_p2p_links(tmp_path):
    # options={"p2p": 0}: no second set of links; sends and receives say why they cannot run.
    store = pycomm.FileStore(str(tmp_path / "store"))
    with pycomm.Communicator(0, 1, store, options={"p2p": 0}) as comm:
        with pytest.raises(ValueError, match="no point-to-point links"):
            comm.send(np.ones(2, np.float32), 0)
        comm.barrier()
    store.close()


def test_from_env_needs_rank_and_size(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(ValueError, match="RANK"):
        pycomm.Communicator.from_env()


def test_bad_transport(tmp_path):
    with pytest.raises(ValueError, match="transport"):
        pycomm.Communicator(0, 1, pycomm.FileStore(str(tmp_path)), transport="carrier-pigeon")


def test_no_shared_memory_left_behind():
    # Runs last in this file; segments are unlinked as soon as all peers map them.
    leftovers = [f for f in os.listdir("/dev/shm") if f.startswith("pycomm")]
    assert not leftovers, leftovers
