"""Completes the Works of ops that pycomm's worker thread runs for a process group.

A large allreduce is submitted asynchronously: the native worker runs it in
submission order while the caller goes on (DDP's backward pass computes the
next buckets' gradients meanwhile, as it does with gloo). One daemon thread
per process group waits on those ops in the same order and settles each
one's `concurrent.futures.Future`; that fires the torch future's callbacks
(DDP's) on this thread, off the caller's.

When overlapping pays (`overlap_bytes`): where the group spans hosts (the
worker mostly waits on the network), or where this host has a core to spare
for each local rank's worker. With as many ranks as cores on one host, the
worker's copies take the core the backward pass needs, and measured DDP steps
were no faster (bench/RESULTS.md), so the op then runs on the caller's thread.
"""
import concurrent.futures
import os
import queue
import threading

__all__ = ["Completer", "overlap_bytes"]

# Below this the hand-off to two threads (~20-50 us) is a visible share of the op.
OVERLAP_MIN_BYTES = 1 << 20


def overlap_bytes(hosts, rank):
    """The smallest op (bytes) a process group over ranks on `hosts` runs
    asynchronously, or None: never (PYCOMM_TORCH_OVERLAP=auto|0|1)."""
    setting = os.environ.get("PYCOMM_TORCH_OVERLAP", "auto").strip().lower() or "auto"
    if setting not in ("auto", "0", "1"):
        raise ValueError(f"PYCOMM_TORCH_OVERLAP must be auto, 0 or 1, got {setting!r}")
    if setting == "0":
        return None
    if setting == "1":
        return OVERLAP_MIN_BYTES
    local = hosts.count(hosts[rank])
    spans_hosts = len(set(hosts)) > 1
    return OVERLAP_MIN_BYTES if spans_hosts or len(os.sched_getaffinity(0)) >= 2 * local else None


class Completer:
    """Waits, in submission order, on the native Works of one communicator."""

    def __init__(self, name):
        self._name = name
        self._queue = queue.SimpleQueue()
        self._thread = None
        self._lock = threading.Lock()

    def add(self, native_work):
        """A Future settled when native_work is: result None, or its error."""
        fut = concurrent.futures.Future()
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"pycomm-completion {self._name}",
                                                daemon=True)
                self._thread.start()
        self._queue.put((native_work, fut))
        return fut

    def _run(self):
        while True:
            item = self._queue.get()
            if item is None:
                return
            work, fut = item
            try:
                work.wait()  # every native op has a deadline, so this returns
            except BaseException as e:  # noqa: B902  the op's error, for its Work
                fut.set_exception(e)
            else:
                fut.set_result(None)

    def close(self, timeout=10.0):
        """Stops the thread once the queued ops are settled (call after the
        communicator finished or failed them)."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout)
