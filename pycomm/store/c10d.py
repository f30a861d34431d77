"""TorchStore: pycomm's Store interface over a torch.distributed (c10d) store."""
import socket
import time

from ..errors import TimeoutError
from .base import Store

__all__ = ["TorchStore"]


class TorchStore(Store):
    """Adapter over a torch.distributed.Store (TCPStore, FileStore, PrefixStore, ...)."""

    def __init__(self, c10d_store):
        self._store = c10d_store

    def set(self, key, value):
        self._store.set(key, bytes(value))

    def get(self, key, timeout):
        from datetime import timedelta

        import torch.distributed as dist

        start = time.monotonic()
        # c10d reads a zero timeout as "wait forever"; an exhausted deadline must still expire.
        try:
            self._store.wait([key], timedelta(seconds=max(timeout, 0.001)))
        except dist.DistStoreError:
            raise TimeoutError(f"torch store: get({key!r}) timed out after {time.monotonic() - start:.2f}s") from None
        return self._store.get(key)

    def add(self, key, amount):
        return self._store.add(key, amount)

    def delete(self, key):
        self._store.delete_key(key)

    def local_address(self):
        """This host's address on the route to a torch TCPStore's server (as
        pycomm's own TCPStore knows from its connection), or None. Without it
        the TCP transport would listen on what the hostname resolves to, often
        127.0.1.1 or an address the other hosts cannot reach."""
        store = self._store
        while hasattr(store, "underlying_store"):  # PrefixStores, down to the real one
            store = store.underlying_store
        host = getattr(store, "host", None)
        if not host:
            return None  # FileStore, HashStore: no route to learn from
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.connect((host, getattr(store, "port", 0) or 9))  # a route lookup: nothing is sent
                addr = s.getsockname()[0]
        except OSError:
            return None
        return None if addr.startswith("0.") else addr

    def close(self):
        self._store = None  # torch stores close when the last reference goes
