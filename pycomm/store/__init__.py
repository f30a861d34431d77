"""Bootstrap key-value stores: how ranks find each other before any data moves.

A `Store` is the small rendezvous interface every launcher can provide: set,
blocking get, atomic add, delete. pycomm ships a TCP store (rank 0 hosts it), a
file store (a shared directory) and an adapter over torch's c10d stores;
`store_from_env` picks one from the variables launchers set.

Keys are strings, values bytes. Counters made by `add` read back through `get`
as ASCII decimal (b"3"), as in torch's c10d stores, so the two interoperate.
"""
from .base import Store
from .c10d import TorchStore
from .env import store_from_env
from .file import FileStore
from .tcp import TCPStore

__all__ = ["Store", "TCPStore", "FileStore", "TorchStore", "store_from_env"]
