"""Point-to-point send/recv for the "pycomm" process group, composed over the
group's c10d store (pycomm's native core has collectives only).

A send writes the tensor's bytes under a key numbered per (source,
destination, tag) and returns: it never waits for the receiver, so
`batch_isend_irecv`, which posts receives before sends on every rank, cannot
deadlock. Receives run in posting order on one thread of their own, with a
clone of the store (a c10d store connection is busy for the whole of a
blocking get), and delete each key once read. Where torch's Store has no
clone() (torch 2.3), that thread shares the group's store and polls it with
check() instead of blocking on it, so sends and the communicator's own
store traffic are never held up behind a receive.

Every byte goes through the store's server: fine for the control-sized
messages pipelines and tests exchange, slow for bulk data.
"""
import collections
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import torch

from .store_poll import poll_until

__all__ = ["StoreP2P"]


def _as_bytes_view(t):
    """A flat uint8 view of contiguous tensor `t` (any dtype)."""
    return t.reshape(-1).view(torch.uint8)


class StoreP2P:
    def __init__(self, store, rank, size, timeout):
        self._store = store
        self._rank = rank
        self._size = size
        self._timeout = timeout
        self._sent = collections.Counter()      # (dst, tag) -> messages sent
        self._received = collections.Counter()  # (src, tag) -> messages received (receive thread only)
        self._recv_store = None
        self._poll = False  # True: no Store.clone(); receives poll the shared store
        self._pool = None

    def _key(self, src, dst, tag, n):
        return f"p2p/{src}/{dst}/{tag}/{n}"

    def send(self, tensor, dst, tag):
        if not 0 <= dst < self._size or dst == self._rank:
            raise ValueError(f"send: invalid destination rank {dst} (this is rank {self._rank} of {self._size})")
        n = self._sent[(dst, tag)]
        self._sent[(dst, tag)] = n + 1
        data = _as_bytes_view(tensor.detach().contiguous().cpu()).numpy().tobytes()
        self._store.set(self._key(self._rank, dst, tag, n), data)

    def recv(self, tensor, src, tag):
        """Starts receiving into `tensor` from `src` (None: any rank); returns a
        concurrent.futures.Future of the source rank."""
        if src is not None and (not 0 <= src < self._size or src == self._rank):
            raise ValueError(f"recv: invalid source rank {src} (this is rank {self._rank} of {self._size})")
        if self._pool is None:
            if hasattr(self._store, "clone"):
                self._recv_store = self._store.clone()
                self._recv_store.set_timeout(timedelta(seconds=self._timeout))
            else:
                self._recv_store, self._poll = self._store, True
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="pycomm-recv")
        return self._pool.submit(self._receive, tensor, src, tag)

    def _receive(self, tensor, src, tag):
        store = self._recv_store
        if src is None or self._poll:
            src, key = self._poll_for(tag, src)
        else:
            key = self._key(src, self._rank, tag, self._received[(src, tag)])
            store.wait([key])
        data = store.get(key)
        self._received[(src, tag)] += 1
        store.delete_key(key)
        tensor = tensor.detach()
        expect = tensor.numel() * tensor.element_size()
        if len(data) != expect:
            raise RuntimeError(f"recv from rank {src} (tag {tag}): got {len(data)} bytes, "
                               f"the tensor holds {expect}: sizes differ between send and recv")
        flat = torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)
        if tensor.is_contiguous() and tensor.device.type == "cpu":
            _as_bytes_view(tensor).copy_(flat)
        else:
            staged = torch.empty(tensor.shape, dtype=tensor.dtype)
            _as_bytes_view(staged).copy_(flat)
            tensor.copy_(staged)
        return src

    def _poll_for(self, tag, src=None):
        """(source, key) of the next message from src (None: any rank), polling the store."""
        store = self._recv_store
        sources = [r for r in range(self._size) if r != self._rank] if src is None else [src]
        found = []

        def arrived():
            for r in sources:
                key = self._key(r, self._rank, tag, self._received[(r, tag)])
                if store.check([key]):
                    found.append((r, key))
                    return True
            return False

        if not poll_until(arrived, time.monotonic() + self._timeout):
            who = "any source" if src is None else f"rank {src}"
            raise TimeoutError(f"recv from {who} (tag {tag}): nothing arrived in {self._timeout:g}s")
        return found[0]

    def close(self):
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
