"""Bootstrap key-value stores: how ranks find each other before any data moves.

A `Store` is the small rendezvous interface every launcher can provide: set,
blocking get, atomic add, delete. pycomm ships a TCP store (rank 0 hosts it), a
file store (a shared directory) and an adapter over torch's c10d stores;
`store_from_env` picks one from the variables launchers set.

Keys are strings, values bytes. Counters made by `add` read back through `get`
as ASCII decimal (b"3"), as in torch's c10d stores, so the two interoperate.
"""
import abc
import errno
import fcntl
import hashlib
import math
import os
import selectors
import socket
import struct
import tempfile
import threading
import time
import urllib.parse

from .errors import CommError, PeerLostError, TimeoutError

__all__ = ["Store", "TCPStore", "FileStore", "TorchStore", "store_from_env"]


def _remaining(deadline):
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
        return [self.get(f"{prefix}/{r}", _remaining(deadline)) for r in range(size)]

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


# ---------------------------------------------------------------------------
# TCP store. Wire protocol, all integers big-endian:
#   request:  u8 command, u32 key length, u64 value length, key (UTF-8), value
#             SET: value = data;  GET: value = f64 timeout in seconds
#             ADD: value = i64 amount;  DELETE: no value
#   response: u8 status, u64 payload length, payload
#             OK: GET -> data, ADD -> i64 new value;  TIMEOUT: empty;  ERROR: UTF-8 message
# A GET of a missing key is parked on the server until the key is set or its
# timeout passes, so clients never poll. A connection's requests are answered in order.

_SET, _GET, _ADD, _DELETE = 1, 2, 3, 4
_OK, _TIMEOUT, _ERROR = 0, 1, 2
_REQUEST = struct.Struct("!BIQ")
_RESPONSE = struct.Struct("!BQ")
_F64 = struct.Struct("!d")
_I64 = struct.Struct("!q")
# Bounds that make a garbage header fail fast instead of buffering forever.
_MAX_KEY = 1 << 16
_MAX_VALUE = 1 << 30


class _Conn:
    def __init__(self, sock):
        self.sock = sock
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.waiting = None  # (key, deadline) while a GET is parked
        self.closed = False


class _Server:
    """The store's data and its event loop, run on one daemon thread.

    All state is touched only by that thread, so nothing needs a lock.
    """

    def __init__(self, host, port):
        family, _, _, _, addr = socket.getaddrinfo(host or "0.0.0.0", port, type=socket.SOCK_STREAM)[0]
        # create_server sets SO_REUSEADDR, so a restarted job can rebind a port in TIME_WAIT.
        self._listener = socket.create_server(addr, family=family, backlog=128)
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        # close() closes _wake_w; the loop sees end-of-file on _wake_r.
        self._wake_r, self._wake_w = socket.socketpair()
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._listener, selectors.EVENT_READ, "accept")
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._conns = set()
        self._data = {}
        self._waiters = {}  # key -> [conn] parked in GET
        self._ready = []  # conns unparked with requests possibly still buffered
        self._drain_timeout = 0.0
        self._drain_deadline = None  # set once closing
        self._thread = threading.Thread(target=self._run, name="pycomm-store-server", daemon=True)
        self._thread.start()

    def close(self, drain_timeout):
        """Stops the server once every client has hung up, or after `drain_timeout` seconds.

        Ranks leave a final barrier at different moments: one that has been let
        through may not have sent its last request yet, and must still get an answer.
        """
        self._drain_timeout = drain_timeout
        self._wake_w.close()
        self._thread.join(drain_timeout + 5.0)

    def _run(self):
        try:
            while self._drain_deadline is None or (self._conns and _remaining(self._drain_deadline) > 0):
                for key, mask in self._sel.select(self._next_deadline()):
                    if key.data == "accept":
                        self._accept()
                    elif key.data == "wake":
                        self._drain_deadline = time.monotonic() + self._drain_timeout
                        for sock in (self._listener, self._wake_r):  # no newcomers from now on
                            self._sel.unregister(sock)
                            sock.close()
                    else:
                        if mask & selectors.EVENT_WRITE:
                            self._flush(key.data)
                        if mask & selectors.EVENT_READ:
                            self._read(key.data)
                self._expire()
                while self._ready:
                    self._process(self._ready.pop())
        finally:
            for key in list(self._sel.get_map().values()):
                key.fileobj.close()
            self._sel.close()

    def _next_deadline(self):
        deadlines = [c.waiting[1] for conns in self._waiters.values() for c in conns]
        if self._drain_deadline is not None:
            deadlines.append(self._drain_deadline)
        # Capped: select() rejects huge timeouts, and waking once a minute costs nothing.
        return min(_remaining(min(deadlines)), 60.0) if deadlines else None

    def _accept(self):
        try:
            sock, _ = self._listener.accept()
        except OSError:  # the client gave up before we got to it, or we are out of descriptors
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = _Conn(sock)
        self._conns.add(conn)
        self._sel.register(sock, selectors.EVENT_READ, conn)

    def _drop(self, conn):
        if conn.closed:
            return
        conn.closed = True
        self._conns.discard(conn)
        if conn.waiting is not None:
            self._unpark(conn)
        self._sel.unregister(conn.sock)
        conn.sock.close()

    def _read(self, conn):
        if conn.closed:
            return
        try:
            chunk = conn.sock.recv(1 << 16)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._drop(conn)
            return
        conn.inbuf += chunk
        self._process(conn)

    def _process(self, conn):
        """Serves the complete requests buffered on `conn`, in order, until one parks."""
        buf = conn.inbuf
        while not conn.closed and conn.waiting is None and len(buf) >= _REQUEST.size:
            cmd, klen, vlen = _REQUEST.unpack_from(buf)
            if cmd not in (_SET, _GET, _ADD, _DELETE) or klen > _MAX_KEY or vlen > _MAX_VALUE:
                self._drop(conn)  # not our protocol: cut it off rather than guess
                return
            end = _REQUEST.size + klen + vlen
            if len(buf) < end:
                return
            try:
                key = buf[_REQUEST.size:_REQUEST.size + klen].decode()
            except UnicodeDecodeError:
                self._drop(conn)
                return
            value = bytes(buf[_REQUEST.size + klen:end])
            del buf[:end]
            self._handle(conn, cmd, key, value)

    def _handle(self, conn, cmd, key, value):
        if cmd == _SET:
            self._data[key] = value
            self._reply(conn, _OK)
            self._notify(key)
        elif cmd == _GET:
            timeout = _F64.unpack(value)[0] if len(value) == _F64.size else math.nan
            if not math.isfinite(timeout):
                self._drop(conn)
            elif key in self._data:
                self._reply(conn, _OK, self._data[key])
            else:
                conn.waiting = (key, time.monotonic() + timeout)
                self._waiters.setdefault(key, []).append(conn)
        elif cmd == _ADD:
            if len(value) != _I64.size:
                self._drop(conn)
                return
            try:
                total = int(self._data.get(key, b"0")) + _I64.unpack(value)[0]
                packed = _I64.pack(total)
            except (ValueError, struct.error):
                self._reply(conn, _ERROR, f"add({key!r}): the value is not a 64-bit integer counter".encode())
                return
            self._data[key] = str(total).encode()
            self._reply(conn, _OK, packed)
            self._notify(key)
        else:
            self._data.pop(key, None)
            self._reply(conn, _OK)

    def _unpark(self, conn):
        key = conn.waiting[0]
        conn.waiting = None
        waiters = self._waiters[key]
        waiters.remove(conn)
        if not waiters:
            del self._waiters[key]

    def _notify(self, key):
        for conn in self._waiters.pop(key, ()):
            conn.waiting = None
            self._reply(conn, _OK, self._data[key])
            self._ready.append(conn)

    def _expire(self):
        now = time.monotonic()
        expired = [c for conns in self._waiters.values() for c in conns if c.waiting[1] <= now]
        for conn in expired:
            self._unpark(conn)
            self._reply(conn, _TIMEOUT)
            self._ready.append(conn)

    def _reply(self, conn, status, payload=b""):
        if conn.closed:
            return
        conn.outbuf += _RESPONSE.pack(status, len(payload))
        conn.outbuf += payload
        self._flush(conn)

    def _flush(self, conn):
        if conn.closed:
            return
        try:
            sent = conn.sock.send(conn.outbuf)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._drop(conn)  # the client went away; its reply has nowhere to go
            return
        del conn.outbuf[:sent]
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.outbuf else 0)
        self._sel.modify(conn.sock, events, conn)


def _connect(host, port, timeout):
    """Connects to the store, retrying until `timeout`: the server may not be up yet."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        try:
            sock = socket.create_connection((host, port), timeout=max(_remaining(deadline), 0.01))
        except OSError as e:
            if time.monotonic() + delay > deadline:
                raise TimeoutError(
                    f"could not connect to the store at {host}:{port} within {timeout:g}s: {e}"
                ) from None
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
            continue
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock


class TCPStore(Store):
    """A store served over TCP by one process (usually rank 0) to all the others.

    `is_server=True` starts the server on `host:port` (port 0 picks a free one,
    see `.port`) in a daemon thread and connects to it like any client.
    Clients retry connecting for `timeout` seconds. With `world_size`, the
    server's constructor returns only once that many stores have connected.
    `.local_address` is this host's address on the connection to the store.
    Closing the server's store ends the store for everyone: it waits up to
    `timeout` for the other ranks to close theirs (or exit), so ranks that
    finish with a barrier and close all get their last answers.

    A TCPStore serializes requests on one connection: a thread blocked in
    `get` holds it until the key appears or the timeout passes.
    """

    def __init__(self, host: str, port: int, is_server: bool, timeout: float, world_size=None):
        self.host = host
        self.timeout = timeout
        self._server = _Server(host, port) if is_server else None
        self.port = self._server.port if is_server else port
        # A wildcard bind address is not something a client can connect to.
        connect_host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
        self._lock = threading.Lock()
        try:
            self._sock = _connect(connect_host, self.port, timeout)
            # This host's address on the route to the store, which peers can likely reach too
            # (unknown when we reached it through a wildcard's loopback stand-in).
            self.local_address = self._sock.getsockname()[0] if connect_host == host else None
            if world_size is not None:
                self._join(world_size)
        except BaseException:
            self._close(drain_timeout=0.0)
            raise

    @classmethod
    def from_url(cls, url: str, is_server: bool, timeout: float, world_size=None) -> "TCPStore":
        """`TCPStore.from_url("tcp://host:port", ...)`; IPv6 hosts go in brackets."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "tcp" or parts.hostname is None or parts.port is None:
            raise ValueError(f"expected tcp://host:port, got {url!r}")
        return cls(parts.hostname, parts.port, is_server, timeout, world_size)

    def _join(self, world_size):
        # Each store takes a ticket; holder of the last ticket announces it. Only the server waits.
        ticket = self.add("__pycomm/joined", 1)
        self.set(f"__pycomm/joined/{ticket}", b"")
        if self._server is not None:
            try:
                self.get(f"__pycomm/joined/{world_size}", self.timeout)
            except TimeoutError:
                joined = int(self.get("__pycomm/joined", 0))
                raise TimeoutError(
                    f"store at {self.host}:{self.port}: only {joined} of {world_size} ranks connected "
                    f"within {self.timeout:g}s"
                ) from None

    def _request(self, cmd, key, value, wait):
        key = key.encode()
        head = _REQUEST.pack(cmd, len(key), len(value))
        with self._lock:
            if self._sock is None:
                raise PeerLostError(f"store at {self.host}:{self.port}: connection is closed")
            try:
                self._sock.settimeout(wait)
                self._sock.sendall(head + key + value)
                status, length = _RESPONSE.unpack(_recv_exact(self._sock, _RESPONSE.size))
                payload = _recv_exact(self._sock, length)
            except OSError as e:
                # A late reply would desynchronize the stream: the connection is unusable now.
                self._sock.close()
                self._sock = None
                if isinstance(e, socket.timeout):
                    raise TimeoutError(f"store at {self.host}:{self.port}: no reply within {wait:g}s") from None
                raise PeerLostError(f"store at {self.host}:{self.port}: connection lost: {e}") from None
        if status == _ERROR:
            raise CommError(f"store at {self.host}:{self.port}: {payload.decode()}")
        return status, payload

    def set(self, key, value):
        self._request(_SET, key, bytes(value), self.timeout)

    def get(self, key, timeout):
        start = time.monotonic()
        # The server enforces `timeout`; the socket deadline only guards against a hung server.
        status, payload = self._request(_GET, key, _F64.pack(timeout), timeout + self.timeout)
        if status == _TIMEOUT:
            raise TimeoutError(
                f"store at {self.host}:{self.port}: get({key!r}) timed out after {time.monotonic() - start:.2f}s"
            )
        return payload

    def add(self, key, amount):
        return _I64.unpack(self._request(_ADD, key, _I64.pack(amount), self.timeout)[1])[0]

    def delete(self, key):
        self._request(_DELETE, key, b"", self.timeout)

    def close(self):
        self._close(drain_timeout=self.timeout)

    def _close(self, drain_timeout):
        with self._lock:
            if getattr(self, "_sock", None) is not None:
                self._sock.close()
                self._sock = None
        if self._server is not None:
            self._server.close(drain_timeout)


def _recv_exact(sock, n):
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:])
        if k == 0:
            raise ConnectionResetError(errno.ECONNRESET, "closed by the server")
        got += k
    return bytes(buf)


class FileStore(Store):
    """A store in a directory, for ranks that share a filesystem and nothing else.

    Each key is one file, replaced atomically (write a temp file, rename), so a
    reader sees either no value or a whole one. `get` polls. Counters are
    updated under an flock on one lock file. Files are created 0600 and a
    missing directory 0700: store values may carry addresses and tokens.
    """

    def __init__(self, directory: str):
        self.directory = os.path.abspath(directory)
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        self._lock_path = os.path.join(self.directory, ".lock")

    def _path(self, key):
        # Quote "/" and every other special character so a key is one file inside the directory.
        name = urllib.parse.quote(key, safe="")
        if len(name) > 200:  # file names are limited to 255 bytes
            return os.path.join(self.directory, "h_" + hashlib.sha256(key.encode()).hexdigest())
        return os.path.join(self.directory, "k_" + name)

    def set(self, key, value):
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")  # mkstemp creates 0600
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(value)
            os.rename(tmp, self._path(key))
        except BaseException:
            os.unlink(tmp)
            raise

    def get(self, key, timeout):
        path = self._path(key)
        start = time.monotonic()
        deadline = start + timeout
        delay = 0.001
        while True:
            try:
                with open(path, "rb") as f:
                    return f.read()
            except FileNotFoundError:
                pass
            left = _remaining(deadline)
            if left == 0:
                raise TimeoutError(
                    f"FileStore {self.directory}: get({key!r}) timed out after {time.monotonic() - start:.2f}s"
                )
            time.sleep(min(delay, left))
            delay = min(delay * 2, 0.05)

    def add(self, key, amount):
        # Open the lock file per call: flock locks belong to the open file, and a
        # descriptor inherited across fork would be one lock shared by both processes.
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # held only for a read and a write; released if the holder dies
            try:
                with open(self._path(key), "rb") as f:
                    total = int(f.read()) + amount
            except FileNotFoundError:
                total = amount
            self.set(key, str(total).encode())
            return total
        finally:
            os.close(fd)

    def delete(self, key):
        try:
            os.unlink(self._path(key))
        except FileNotFoundError:
            pass

    def close(self):
        pass  # nothing is held between calls


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


def store_from_env(rank: int, world_size: int, timeout: float) -> Store:
    """The store a launcher set up for this process, found from environment variables.

    - PYCOMM_STORE=file:///path -> FileStore; PYCOMM_STORE=tcp://host:port -> TCPStore (rank 0 serves)
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
