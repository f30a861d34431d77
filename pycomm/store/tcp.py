"""TCPStore: a store served over TCP by one process (usually rank 0).

Wire protocol, all integers big-endian:
  request:  u8 command, u32 key length, u64 value length, key (UTF-8), value
            SET: value = data;  GET: value = f64 timeout in seconds
            ADD: value = i64 amount;  DELETE: no value
  response: u8 status, u64 payload length, payload
            OK: GET -> data, ADD -> i64 new value;  TIMEOUT: empty;  ERROR: UTF-8 message
A GET of a missing key is parked on the server until the key is set or its
timeout passes, so clients never poll. A connection's requests are answered in order.
On accepting a connection the server first sends GREETING, so a client that
reached some other program on the port (torch's TCPStore, after
init_process_group took MASTER_PORT) says so at once instead of waiting out
its timeout.
"""
import errno
import math
import selectors
import socket
import struct
import threading
import time
import urllib.parse

from ..errors import CommError, PeerLostError, TimeoutError
from .base import Store, remaining

__all__ = ["TCPStore"]

_SET, _GET, _ADD, _DELETE = 1, 2, 3, 4
_OK, _TIMEOUT, _ERROR = 0, 1, 2
_REQUEST = struct.Struct("!BIQ")
_RESPONSE = struct.Struct("!BQ")
_F64 = struct.Struct("!d")
_I64 = struct.Struct("!q")
# Bounds that make a garbage header fail fast instead of buffering forever.
_MAX_KEY = 1 << 16
_MAX_VALUE = 1 << 30
GREETING = b"PYCOMMS1"
_GREETING_WAIT = 10.0  # seconds a connected client waits for it


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
        try:
            self._listener = socket.create_server(addr, family=family, backlog=128)
        except OSError as e:
            if e.errno != errno.EADDRINUSE:
                raise
            raise CommError(f"cannot serve the store on {host or '*'}:{port}: the port is in use (by torch's "
                            "TCPStore after dist.init_process_group? Communicator.from_env then shares torch's "
                            "store; otherwise set PYCOMM_STORE or another MASTER_PORT)") from None
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
            while self._drain_deadline is None or (self._conns and remaining(self._drain_deadline) > 0):
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
        return min(remaining(min(deadlines)), 60.0) if deadlines else None

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
        conn.outbuf += GREETING
        self._flush(conn)

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
            sock = socket.create_connection((host, port), timeout=max(remaining(deadline), 0.01))
        except OSError as e:
            if time.monotonic() + delay > deadline:
                raise TimeoutError(
                    f"could not connect to the store at {host}:{port} within {timeout:g}s: {e}"
                ) from None
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
            continue
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _greeted(sock, host, port, min(_GREETING_WAIT, max(remaining(deadline), 1.0)))
        return sock


def _greeted(sock, host, port, wait):
    """Reads the server's greeting; raises CommError at once when what
    answered on host:port is not a pycomm store."""
    got = b""
    sock.settimeout(wait)
    try:
        while len(got) < len(GREETING):
            chunk = sock.recv(len(GREETING) - len(got))
            if not chunk:
                break
            got += chunk
    except OSError:
        pass
    finally:
        sock.settimeout(None)
    if got != GREETING:
        sock.close()
        what = repr(got[:16]) if got else f"nothing within {wait:g}s"
        raise CommError(f"{host}:{port} is not a pycomm store (it answered {what}); another program serves that "
                        "port, such as torch's TCPStore after dist.init_process_group: set PYCOMM_STORE or "
                        "another MASTER_PORT")


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
