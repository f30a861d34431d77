"""Bootstrap stores: TCPStore and FileStore, in one process and across processes."""
import multiprocessing
import os
import socket
import stat
import struct
import threading
import time
from concurrent.futures import ProcessPoolExecutor

import pytest

from pycomm.errors import CommError, TimeoutError
from pycomm.store import FileStore, TCPStore, TorchStore, store_from_env

# spawn, not fork: the parent runs a store server thread, and fork copies no threads.
_MP = multiprocessing.get_context("spawn")


@pytest.fixture
def server():
    store = TCPStore("127.0.0.1", 0, is_server=True, timeout=10)
    yield store
    store.close()


@pytest.fixture(params=["tcp", "file"])
def url(request, tmp_path):
    """Where a store lives, as a URL child processes can open."""
    if request.param == "file":
        yield f"file://{tmp_path / 'store'}"
    else:
        store = TCPStore("127.0.0.1", 0, is_server=True, timeout=10)
        yield f"tcp://127.0.0.1:{store.port}"
        store.close()


def _open(url):
    if url.startswith("file://"):
        return FileStore(url[len("file://"):])
    return TCPStore.from_url(url, is_server=False, timeout=10)


@pytest.fixture
def store(url):
    s = _open(url)
    yield s
    s.close()


def _run(fn, args_list):
    with ProcessPoolExecutor(len(args_list), mp_context=_MP) as pool:
        return list(pool.map(fn, *zip(*args_list)))


# -- one process ---------------------------------------------------------------


def test_set_get_add_delete(store):
    store.set("a", b"\x00payload\xff")
    assert store.get("a", 1) == b"\x00payload\xff"
    store.set("a", b"")
    assert store.get("a", 1) == b""
    assert store.add("n", 5) == 5
    assert store.add("n", -2) == 3
    assert store.get("n", 1) == b"3"  # counters read back as ASCII, as in c10d
    store.delete("a")
    store.delete("never-set")
    with pytest.raises(TimeoutError):
        store.get("a", 0.05)


def test_keys_with_slashes_stay_distinct(store):
    keys = ["a/b", "a%2Fb", "a/b/", "../escape", "/abs", ".", "..", "x" * 300, "ünï"]
    for i, key in enumerate(keys):
        store.set(key, str(i).encode())
    assert [store.get(k, 1) for k in keys] == [str(i).encode() for i in range(len(keys))]


def test_get_blocks_until_set(store, url):
    def later():
        time.sleep(0.2)
        with _open(url) as other:
            other.set("late", b"here")

    thread = threading.Thread(target=later)
    start = time.monotonic()
    thread.start()
    assert store.get("late", 5) == b"here"
    assert time.monotonic() - start >= 0.15
    thread.join()


def test_get_timeout_names_key(store):
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="missing-key") as info:
        store.get("missing-key", 0.2)
    assert 0.15 <= time.monotonic() - start < 2
    assert isinstance(info.value, CommError)
    store.set("k", b"v")  # the store is still usable after a timeout
    assert store.get("k", 1) == b"v"


def test_filestore_permissions(tmp_path):
    directory = tmp_path / "new" / "store"
    store = FileStore(str(directory))
    store.set("secret/key", b"token")
    store.add("count", 1)
    assert stat.S_IMODE(os.stat(directory).st_mode) & 0o077 == 0
    files = os.listdir(directory)
    assert files and all(stat.S_IMODE(os.stat(directory / f).st_mode) == 0o600 for f in files)
    assert not any(f.startswith(".tmp") for f in files)


# -- TCP server behavior ----------------------------------------------------------


def test_server_picks_port_and_from_url(server):
    assert server.port > 0
    with TCPStore.from_url(f"tcp://127.0.0.1:{server.port}", is_server=False, timeout=5) as client:
        client.set("k", b"v")
        assert client.local_address == "127.0.0.1"
    assert server.get("k", 1) == b"v"
    with TCPStore("0.0.0.0", 0, is_server=True, timeout=5) as wildcard:
        assert wildcard.local_address is None  # reached over loopback, which says nothing about routes


def test_client_waits_for_late_server():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = {}

    def connect():
        with TCPStore("127.0.0.1", port, is_server=False, timeout=10) as client:
            result["v"] = client.get("k", 5)

    thread = threading.Thread(target=connect)
    thread.start()
    time.sleep(0.3)
    with TCPStore("127.0.0.1", port, is_server=True, timeout=10) as server:
        server.set("k", b"up")
        thread.join(10)
    assert result == {"v": b"up"}


def test_connect_timeout_names_address():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(TimeoutError, match=f"127.0.0.1:{port}"):
        TCPStore("127.0.0.1", port, is_server=False, timeout=0.3)


@pytest.mark.parametrize("answer", [None, b"HTTP/1.1 400 Bad Request\r\n"])
def test_not_a_pycomm_store_fails_fast(monkeypatch, answer):
    # What listens on the port is some other program (torch's TCPStore, say): the
    # client says so once the greeting does not come, not after its whole timeout.
    import pycomm.store.tcp as tcp

    monkeypatch.setattr(tcp, "_GREETING_WAIT", 0.5)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    accepted = []

    def serve():
        conn, _ = listener.accept()
        accepted.append(conn)
        if answer:
            conn.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    t0 = time.monotonic()
    with pytest.raises(CommError, match=f"127.0.0.1:{port} is not a pycomm store"):
        TCPStore("127.0.0.1", port, is_server=False, timeout=60, world_size=2)
    assert time.monotonic() - t0 < 10
    listener.close()


def test_port_in_use_is_named():
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(CommError, match=f"127.0.0.1:{port}: the port is in use"):
            TCPStore("127.0.0.1", port, is_server=True, timeout=1)


def _raw(port, data):
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(data)
    return sock


def test_bad_clients_do_not_hurt_server(server):
    garbage = [
        os.urandom(4096),
        struct.pack("!BIQ", 99, 1, 0) + b"k",  # unknown command
        struct.pack("!BIQ", 1, 1, 1 << 62),  # absurd value length
        struct.pack("!BIQ", 2, 1, 8) + b"k" + struct.pack("!d", float("nan")),  # GET with NaN timeout
        struct.pack("!BIQ", 1, 5, 10) + b"hal",  # dies mid-request
    ]
    for data in garbage:
        _raw(server.port, data).close()
    # A client that dies while its GET is parked on the server, then the key is set.
    parked = _raw(server.port, struct.pack("!BIQ", 2, 6, 8) + b"parked" + struct.pack("!d", 60.0))
    time.sleep(0.05)
    parked.close()
    server.set("parked", b"x")
    # A client that pipelines requests and never reads the replies.
    mute = _raw(server.port, (struct.pack("!BIQ", 2, 6, 8) + b"parked" + struct.pack("!d", 1.0)) * 1000)
    with TCPStore("127.0.0.1", server.port, is_server=False, timeout=5) as client:
        client.set("ok", b"fine")
        assert client.get("ok", 1) == b"fine"
        assert client.add("n", 2) == 2
    mute.close()


def test_add_on_non_counter_is_an_error(server):
    server.set("text", b"abc")
    with pytest.raises(CommError, match="not a 64-bit integer"):
        server.add("text", 1)
    server.add("big", 2**62)
    with pytest.raises(CommError, match="not a 64-bit integer"):
        server.add("big", 2**62)
    assert server.add("n", 1) == 1


def test_world_size_waits_for_all_ranks():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    clients = []

    def join():
        time.sleep(0.2)
        clients.append(TCPStore("127.0.0.1", port, is_server=False, timeout=5, world_size=2))

    thread = threading.Thread(target=join)
    start = time.monotonic()
    thread.start()
    with TCPStore("127.0.0.1", port, is_server=True, timeout=5, world_size=2):
        assert time.monotonic() - start >= 0.15  # returned only once the other rank joined
        thread.join(5)
        assert len(clients) == 1
        clients[0].close()
    with pytest.raises(TimeoutError, match="only 1 of 2 ranks"):
        TCPStore("127.0.0.1", 0, is_server=True, timeout=0.3, world_size=2)


def test_close_serves_clients_until_they_leave(server):
    server.set("last", b"word")
    client = TCPStore("127.0.0.1", server.port, is_server=False, timeout=5)
    answers = []

    def finish():  # a rank still on its way out of a final barrier when the server closes
        time.sleep(0.2)
        answers.append(client.get("last", 1))
        client.close()

    thread = threading.Thread(target=finish)
    thread.start()
    start = time.monotonic()
    server.close()
    assert time.monotonic() - start >= 0.15
    assert answers == [b"word"]
    thread.join()
    assert not any(t.name == "pycomm-store-server" and t.is_alive() for t in threading.enumerate())


def test_close_gives_up_on_clients_that_stay():
    server = TCPStore("127.0.0.1", 0, is_server=True, timeout=0.3)
    client = TCPStore("127.0.0.1", server.port, is_server=False, timeout=5)
    start = time.monotonic()
    server.close()
    server.close()
    assert time.monotonic() - start < 3
    with pytest.raises(CommError):
        client.get("k", 1)
    client.close()
    # The port is free to reuse straight away (SO_REUSEADDR).
    TCPStore("127.0.0.1", server.port, is_server=True, timeout=5).close()


# -- several processes ----------------------------------------------------------


def _adder(url, n):
    with _open(url) as store:
        return [store.add("counter", 1) for _ in range(n)]


def test_add_is_atomic_across_processes(url):
    results = _run(_adder, [(url, 100)] * 4)
    seen = sorted(v for r in results for v in r)
    assert seen == list(range(1, 401))
    with _open(url) as store:
        assert store.get("counter", 1) == b"400"


def _collective(url, rank, size):
    with _open(url) as store:
        time.sleep(0.1 * rank)  # arrive at different times
        entered = time.time()
        store.barrier("b0", rank, size, timeout=10)
        left = time.time()
        gathered = store.allgather("g0", rank, size, f"rank{rank}".encode(), timeout=10)
        store.barrier("b1", rank, size, timeout=10)
        return entered, left, gathered


def test_barrier_and_allgather_across_processes(url):
    results = _run(_collective, [(url, r, 3) for r in range(3)])
    assert min(left for _, left, _ in results) >= max(entered for entered, _, _ in results)
    assert all(g == [b"rank0", b"rank1", b"rank2"] for _, _, g in results)


def test_barrier_timeout_reports_arrivals(store):
    with pytest.raises(TimeoutError, match="1 of 2 ranks"):
        store.barrier("lonely", 0, 2, timeout=0.1)


# -- environment and torch ------------------------------------------------------


def test_store_from_env(monkeypatch, tmp_path):
    for name in ("PYCOMM_STORE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_USE_AGENT_STORE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="MASTER_ADDR and MASTER_PORT"):
        store_from_env(0, 1, 1)
    monkeypatch.setenv("PYCOMM_STORE", f"file://{tmp_path}")
    assert isinstance(store_from_env(1, 2, 1), FileStore)
    monkeypatch.setenv("PYCOMM_STORE", "tcp://127.0.0.1:0")
    with store_from_env(0, 1, 5) as store:
        assert isinstance(store, TCPStore) and store.port > 0
    monkeypatch.setenv("PYCOMM_STORE", "redis://x")
    with pytest.raises(ValueError, match="PYCOMM_STORE"):
        store_from_env(0, 1, 1)
    monkeypatch.delenv("PYCOMM_STORE")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "0")
    with store_from_env(0, 1, 5) as store:
        store.set("k", b"v")
        assert store.get("k", 1) == b"v"


def test_torch_store():
    dist = pytest.importorskip("torch.distributed")
    from datetime import timedelta

    c10d = dist.TCPStore("127.0.0.1", 0, is_master=True, timeout=timedelta(seconds=5), wait_for_workers=False)
    store = TorchStore(dist.PrefixStore("pycomm", c10d))
    store.set("a/b", b"v")
    assert store.get("a/b", 1) == b"v"
    assert store.add("n", 3) == 3 and store.get("n", 1) == b"3"
    store.delete("a/b")
    with pytest.raises(TimeoutError, match="a/b"):
        store.get("a/b", 0.1)
    store.barrier("bar", 0, 1, timeout=1)
    assert store.allgather("ag", 0, 1, b"x", timeout=1) == [b"x"]
    # The address on the route to the TCPStore's server, through any PrefixStores; none for other stores.
    assert TorchStore(dist.PrefixStore("x", dist.PrefixStore("y", c10d))).local_address() == "127.0.0.1"
    assert TorchStore(dist.HashStore()).local_address() is None
    store.close()
