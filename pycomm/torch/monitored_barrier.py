"""`monitored_barrier` for the "pycomm" process group: a barrier that names
the ranks that did not reach it, as gloo's does.

It goes through the group's c10d store, not the communicator: its use is
finding a rank stuck in (or never reaching) a collective, and a rank stuck
in a collective holds the communicator. Rank 0 collects one arrival key per
rank within the timeout, then releases each rank with a key of its own.
Store keys are polled (store_poll.py), so the group's shared store
connection is never held.

The messages keep gloo's wording, which torch's tests and users' log
searches look for: "Rank 1 failed to pass monitoredBarrier in 2000 ms".
"""
import time
from datetime import timedelta

from pycomm.errors import TimeoutError as CommTimeoutError

from .store_poll import poll_until

__all__ = ["MonitoredBarrier"]


def _seconds(timeout):
    seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)
    if seconds < 0:
        raise ValueError(f"monitored_barrier: timeout must be >= 0, got {seconds:g} s")
    return seconds


class MonitoredBarrier:
    """The monitored barriers of one process group (its store, its ranks)."""

    def __init__(self, store, rank, size):
        self._store = store
        self._rank = rank
        self._size = size
        self._calls = 0  # every rank numbers its calls alike, so each call has its own keys

    def _key(self, call, what, rank):
        return f"monitored_barrier/{call}/{what}/{rank}"

    def _is_set(self, key, deadline):
        """Whether `key` is set by the deadline."""
        return poll_until(lambda: self._store.check([key]), deadline)

    def __call__(self, timeout, wait_all_ranks=False):
        seconds = _seconds(timeout)
        call, self._calls = self._calls, self._calls + 1
        deadline = time.monotonic() + seconds
        if self._rank != 0:
            self._store.set(self._key(call, "arrived", self._rank), b"1")
            release = self._key(call, "released", self._rank)
            if not self._is_set(release, deadline):
                raise CommTimeoutError(
                    f"Rank {self._rank} successfully reached monitoredBarrier, but received errors while "
                    f"waiting for send/recv from rank 0 (no release within {seconds * 1000:.0f} ms). "
                    f"Please check rank 0 logs for faulty rank.")
            self._store.delete_key(release)
            return
        self._gather(call, seconds, deadline, wait_all_ranks)
        for r in range(1, self._size):
            self._store.set(self._key(call, "released", r), b"1")

    def _gather(self, call, seconds, deadline, wait_all_ranks):
        """Rank 0: every other rank's arrival by the deadline, or an error
        naming the first missing rank (all of them with wait_all_ranks)."""
        ms = f"{seconds * 1000:.0f} ms"
        missing = []
        for r in range(1, self._size):
            if not wait_all_ranks and time.monotonic() >= deadline:
                raise CommTimeoutError(
                    f"Rank 0 timed out in monitoredBarrier after {ms}; ranks {r}..{self._size - 1} "
                    f"were not yet checked in")
            key = self._key(call, "arrived", r)
            if not self._is_set(key, deadline):
                if not wait_all_ranks:
                    raise CommTimeoutError(f"Rank {r} failed to pass monitoredBarrier in {ms}")
                missing.append(r)
            else:
                self._store.delete_key(key)
        if missing:
            ranks = ", ".join(str(r) for r in missing)
            raise CommTimeoutError(f"Ranks {ranks} failed to pass monitoredBarrier in {ms}")
