"""The store a launcher set up, found from environment variables."""
import os
import sys

from .base import Store
from .c10d import TorchStore
from .file import FileStore
from .tcp import TCPStore

__all__ = ["store_from_env"]


def store_from_env(rank: int, world_size: int, timeout: float) -> Store:
    """The store a launcher set up for this process, found from environment variables.

    - PYCOMM_STORE=file:///path -> FileStore; PYCOMM_STORE=tcp://host:port -> TCPStore (rank 0 serves)
    - where this process has initialized torch.distributed: torch's default store (its TCPStore holds
      MASTER_PORT), under a prefix of pycomm's own
    - under torchrun (TORCHELASTIC_USE_AGENT_STORE=True): the agent's c10d store at MASTER_ADDR:MASTER_PORT
    - otherwise MASTER_ADDR and MASTER_PORT -> TCPStore served by rank 0 (pycomm.launch sets these)
    """
    url = os.environ.get("PYCOMM_STORE")
    if url:
        if url.startswith("file://"):
            return FileStore(url[len("file://"):])
        if url.startswith("tcp://"):
            return TCPStore.from_url(url, rank == 0, timeout, world_size)
        raise ValueError(f"PYCOMM_STORE={url!r}: expected file:///path or tcp://host:port")
    torch_store = _torch_default_store()
    if torch_store is not None:
        return torch_store
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
    if missing:
        raise ValueError(f"no rendezvous configured: set PYCOMM_STORE, or {' and '.join(missing)}")
    addr, port = os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"]
    if not port.isdigit():
        raise ValueError(f"MASTER_PORT={port!r} is not a port number")
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        from datetime import timedelta

        import torch.distributed as dist

        c10d = dist.TCPStore(addr, int(port), is_master=False, timeout=timedelta(seconds=timeout))
        # torchrun restarts workers against the same agent store: scope keys by
        # attempt so a restarted rank never reads values from the previous one.
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        return TorchStore(dist.PrefixStore(f"pycomm/{attempt}", c10d))
    return TCPStore(addr, int(port), rank == 0, timeout, world_size)


def _torch_default_store():
    """torch.distributed's default store under the prefix "pycomm/env", when
    this process has initialized torch.distributed (never imports torch)."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return None
    from torch.distributed.distributed_c10d import _get_default_store

    return TorchStore(dist.PrefixStore("pycomm/env", _get_default_store()))
