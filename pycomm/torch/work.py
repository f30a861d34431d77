"""Work handles the "pycomm" process group returns to torch.

A Python subclass of torch's Work (torch calls `wait`, `get_future`, ...
through its trampoline), never one made by `_create_work_from_future`: that
kind drops exceptions set from Python, and pycomm's errors must reach the
caller as gloo's do, from `wait()` and through the future.

Most ops finish before the process group returns their Work (pycomm runs a
blocking op on the calling thread, which costs far less than a hand-off to
another thread); such a Work is created completed. Ops that finish later
(receives, overlapped allreduces) pass the `concurrent.futures.Future` of the
thread running or completing them; an overlapped allreduce also passes its
native Work, which `wait()` waits on directly, so a blocking caller does not
wait for the completion thread to be scheduled as well.

Older torch (2.3) keeps only the C++ half of a Work that a Python process
group returns to a C++ caller (DDP's reducer and parameter check, module
state broadcasts): the Python object is freed as soon as the call returns,
so the caller's wait() falls to c10d::Work::wait, which never returns, and
getFuture() throws. Newer torch holds the Python object for as long as C++
holds the Work (PyWorkHolder). Where torch does not (probed once, at
import), each Work is kept alive here until its first wait() or
get_future(), the calls torch's C++ code makes, or until _HELD_MAX newer
Works are held (a Python caller that never waits).
"""
import collections
import threading
import weakref

import torch
import torch.distributed as dist

import pycomm

__all__ = ["P2PWork", "Work"]


def _torch_keeps_python_works():
    """Whether torch keeps a Python Work alive while C++ holds it: a probe
    through the C++ entry point of a throwaway Python process group."""
    try:
        refs = []

        class _Work(dist.Work):
            def wait(self, timeout=None):
                return True

        class _Group(dist.ProcessGroup):
            def getBackendName(self):
                return "pycomm-probe"

            def allreduce(self, tensors, opts=None):
                w = _Work()
                refs.append(weakref.ref(w))
                return w

        work = dist.ProcessGroup.allreduce(_Group(0, 1), [torch.zeros(1)], dist.AllreduceOptions())
        alive = bool(refs) and refs[0]() is not None
        del work
        return alive
    except Exception:  # noqa: BLE001  unknown torch: holding Works is harmless
        return False


_HOLD = not _torch_keeps_python_works()
_HELD_MAX = 1024
_held = collections.OrderedDict()  # id(work) -> work, oldest first (only where _HOLD)


class Work(dist.Work):
    """A finished (or pending) op: `wait()` returns True or raises its error;
    `get_future()` gives a torch Future holding `result` (a list of tensors)."""

    _error = None     # an exception raised by pycomm, re-raised by wait()
    _pending = None   # concurrent.futures.Future of an op still running, or None
    _future = None
    _native = None    # the native Work of an op on pycomm's worker thread, or None

    def __init__(self, result, error=None, pending=None, native=None):
        super().__init__()
        self._result = result      # what the future holds, gloo's convention: the output tensors
        if error is not None:
            self._error = error
        if pending is not None:
            self._pending = pending
        if native is not None:
            self._native = native
        if _HOLD:
            _held[id(self)] = self
            if len(_held) > _HELD_MAX:
                _held.popitem(last=False)

    def _settle(self, timeout=None):
        # Idempotent and safe from two threads: it only reads the pending future.
        pending = self._pending
        if pending is None:
            return
        native = self._native
        if native is not None and not pending.done():
            try:
                native.wait(timeout)
            except pycomm.CommError as e:
                if not native.is_completed():  # the wait timed out, not the op: it goes on
                    raise
                self._error = e
            self._pending = None
            return
        if not pending.done():
            try:
                pending.result(timeout)
            except BaseException:  # noqa: B902
                if not pending.done():  # the wait itself timed out: the op goes on
                    raise pycomm.TimeoutError(f"Work.wait timed out after {timeout:g} s; "
                                              "the op is still running") from None
        self._error = pending.exception()
        self._pending = None

    def wait(self, timeout=None):
        if _HOLD:
            _held.pop(id(self), None)
        secs = None
        if timeout is not None and hasattr(timeout, "total_seconds"):
            secs = timeout.total_seconds() or None  # torch's default timedelta(0) means "no limit"
        self._settle(secs)
        if self._error is not None:
            raise self._error
        return True

    def is_completed(self):
        pending, native = self._pending, self._native
        return pending is None or pending.done() or (native is not None and native.is_completed())

    def is_success(self):
        if not self.is_completed():
            raise RuntimeError("is_success() called on an op that has not completed")
        self._settle()
        return self._error is None

    def exception(self):
        if self._pending is not None and self._pending.done():
            self._settle()
        return self._error

    def result(self):
        self.wait()
        return self._result

    _src = -1  # recv: the rank the message came from

    def source_rank(self):
        self.wait()
        return self._src

    _source_rank = source_rank  # what torch.distributed.recv calls

    def synchronize(self):
        pass  # CPU ops; GPU ops are complete on the caller's stream when pycomm returns

    def get_future(self):
        if _HOLD:
            _held.pop(id(self), None)
        if self._future is None:
            fut = torch.futures.Future()
            if self._pending is None:
                self._complete(fut)
            else:
                self._pending.add_done_callback(lambda _: (self._settle(), self._complete(fut)))
            self._future = fut
        return self._future

    def _complete(self, fut):
        if self._error is not None:
            fut.set_exception(self._error)
        else:
            fut.set_result(self._result)


class P2PWork(Work):
    """Sends and receives on the communicator's point-to-point engine.
    `wait()` waits on the native ops themselves (the waiting thread moves
    every outstanding op of the communicator), then runs `then` (a receive's
    copy into a non-contiguous or CUDA tensor). `ops`: one native Work, or
    the P2PWorks of a coalesced batch. `keep`: what must outlive the op (a
    contiguous stand-in for the caller's tensor)."""

    def __init__(self, result, ops, keep=None, then=None):
        super().__init__(result)
        self._ops = ops if isinstance(ops, list) else [ops]
        self._keep, self._then = keep, then
        self._lock = threading.Lock()

    def _settle(self, timeout=None):
        with self._lock:
            if self._ops is None:
                return
            for op in self._ops:
                if isinstance(op, P2PWork):
                    op._settle(timeout)
                    error = op._error
                else:
                    error = None
                    try:
                        op.wait(timeout)
                    except pycomm.CommError as e:
                        if not op.is_completed():  # the wait timed out, not the op: it goes on
                            raise
                        error = e
                    if error is None and len(self._ops) == 1:
                        self._src = getattr(op, "source", -1)
                if error is not None and self._error is None:
                    self._error = error
            if self._error is None and self._then is not None:
                self._then()
            self._ops = self._keep = self._then = None

    def is_completed(self):
        ops = self._ops
        return ops is None or all(op.is_completed() for op in ops)

    def exception(self):
        if self.is_completed():
            self._settle()
        return self._error

    def get_future(self):
        if _HOLD:
            _held.pop(id(self), None)
        if self._future is None:
            fut = torch.futures.Future()
            self._future = fut
            if self.is_completed():
                self._settle()
                self._complete(fut)
            else:  # settled by a thread of its own: a receive may complete long after later ops
                threading.Thread(target=self._settle_future, args=(fut,), daemon=True,
                                 name="pycomm-p2p-future").start()
        return self._future

    def _settle_future(self, fut):
        try:
            self._settle()
        except BaseException as e:  # noqa: B902  handed to whoever waits on the future
            self._error = self._error or e
        self._complete(fut)
