"""The Store interface, and the two operations every store composes from it."""
import abc
import time

from ..errors import TimeoutError

__all__ = ["Store", "remaining"]


def remaining(deadline):
    """Seconds left until `deadline` (time.monotonic()), never negative."""
    return max(0.0, deadline - time.monotonic())


class Store(abc.ABC):
    """Key-value rendezvous. Implementations must be safe to use from several processes."""

    @abc.abstractmethod
    def set(self, key: str, value: bytes) -> None:
        """Stores `value` under `key`, replacing any previous value."""

    @abc.abstractmethod
    def get(self, key: str, timeout: float) -> bytes:
        """Returns the value of `key`, waiting up to `timeout` seconds for it to be set.

        Raises pycomm.TimeoutError naming the key if it does not appear in time.
        """

    @abc.abstractmethod
    def add(self, key: str, amount: int) -> int:
        """Atomically adds `amount` to the counter `key` (missing counts as 0); returns the new value."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Removes `key`; a missing key is not an error."""

    @abc.abstractmethod
    def close(self) -> None:
        """Releases the store's connections. Idempotent."""

    def allgather(self, prefix: str, rank: int, size: int, data: bytes, timeout: float) -> list:
        """Every rank contributes `data`; returns all contributions in rank order.

        `prefix` must be unique per call: the keys it writes are never reused.
        """
        deadline = time.monotonic() + timeout
        self.set(f"{prefix}/{rank}", data)
        return [self.get(f"{prefix}/{r}", remaining(deadline)) for r in range(size)]

    def barrier(self, prefix: str, rank: int, size: int, timeout: float) -> None:
        """Returns once all `size` ranks have entered the barrier. `prefix` must be unique per call."""
        arrived = f"{prefix}/arrived"
        # The last rank to arrive opens the barrier for everyone.
        if self.add(arrived, 1) == size:
            self.set(f"{prefix}/open", b"")
        try:
            self.get(f"{prefix}/open", timeout)
        except TimeoutError:
            count = int(self.get(arrived, 0))
            raise TimeoutError(
                f"barrier {prefix!r}: rank {rank} waited {timeout:g}s but only {count} of {size} ranks arrived"
            ) from None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
