"""Point-to-point sends and receives, checked against seeded numpy arrays
every rank can regenerate. `python p2p.py SCENARIO` (default: all that need
no dying rank); exit status non-zero on the first wrong result."""
import os
import sys
import time

import numpy as np

import pycomm
from common import comm_from_env, expect, log

SEED = 77
# Around the eager / rendezvous boundary (32 KiB) and the shm ring (1 MiB).
SIZES = [0, 1, 7, 1000, 8191, 8192, 8193, 300_001]


def message(src, dst, tag, count, dtype="float32", salt=0):
    rng = np.random.default_rng([SEED, src, dst, tag, count, salt])
    if np.dtype(dtype).kind == "f":
        return rng.uniform(-1, 1, count).astype(dtype)
    return rng.integers(-100, 100, count).astype(dtype)


def pairs(comm):
    """Every rank sends every size to every other rank (and itself),
    blocking and not, in several dtypes; receives name their source."""
    n, r = comm.size, comm.rank
    for dtype in ("float32", "int64", "uint8", "float16"):
        for count in SIZES:
            tag = count % 97
            sends, recvs = [], []
            for p in range(n):
                buf = np.full(count, 99, dtype)
                recvs.append((p, buf, comm.irecv(buf, p, tag=tag)))
            for p in range(n):
                sends.append(comm.isend(message(r, p, tag, count, dtype), p, tag=tag))
            for p, buf, w in recvs:
                w.wait()
                assert w.source == p and w.count == count, (w.source, w.count, p, count)
                assert np.array_equal(buf, message(p, r, tag, count, dtype)), f"{dtype} x {count} from {p}"
            for w in sends:
                w.wait()
                assert w.is_completed() and w.exception() is None
    # Blocking, in a ring: even ranks send first, odd ranks receive first.
    for count in (0, 5, 300_001):
        out = message(r, (r + 1) % n, 5, count)
        buf = np.empty(count, np.float32)
        if r % 2 == 0:
            comm.send(out, (r + 1) % n, tag=5)
            assert comm.recv(buf, (r - 1) % n, tag=5) == (r - 1) % n
        else:
            assert comm.recv(buf, (r - 1) % n, tag=5) == (r - 1) % n
            comm.send(out, (r + 1) % n, tag=5)
        assert np.array_equal(buf, message((r - 1) % n, r, 5, count))


def irecv_first_large(comm):
    """Every rank posts its receive first and its send second, at 64 MiB."""
    n, r = comm.size, comm.rank
    count = 16 << 20  # float32: 64 MiB
    to, frm = (r + 1) % n, (r - 1) % n
    x = np.full(count, r + 1, np.float32)
    y = np.zeros(count, np.float32)
    rw = comm.irecv(y, frm, tag=1)
    sw = comm.isend(x, to, tag=1)
    rw.wait()
    sw.wait()
    assert rw.source == frm and rw.count == count
    assert y[0] == frm + 1 and y[-1] == frm + 1 and np.all(y == frm + 1)


def any_source_and_order(comm):
    """Rank 0 takes every other rank's messages from any source; messages of
    one pair and tag arrive in the order sent, whatever other tags do."""
    n, r = comm.size, comm.rank
    k = 6
    if r == 0:
        seen = {p: [] for p in range(1, n)}
        for _ in range((n - 1) * k):
            buf = np.empty(3, np.int64)
            w = comm.irecv(buf, None, tag=4)
            w.wait()
            p = w.source
            assert np.array_equal(buf, [p, buf[1], 4]), buf
            seen[p].append(int(buf[1]))
        for p, order in seen.items():
            assert order == list(range(k)), f"from rank {p}: {order}"
        # Tags interleaved: receive every tag-1 message before any tag-0 one.
        for p in range(1, n):
            got = {0: [], 1: []}
            for tag in [1] * k + [0] * k:
                buf = np.empty(2, np.int64)
                assert comm.recv(buf, p, tag=tag) == p
                got[tag].append(int(buf[0]))
            assert got[0] == list(range(0, 2 * k, 2)) and got[1] == list(range(1, 2 * k, 2)), got
    else:
        for i in range(k):
            comm.send(np.array([r, i, 4], np.int64), 0, tag=4)
        for i in range(2 * k):
            comm.send(np.array([i, 0], np.int64), 0, tag=i % 2)
    comm.barrier()


def group_and_self(comm):
    """A group posts sends and receives together in any order; a rank can
    send to itself."""
    n, r = comm.size, comm.rank
    count = 3 << 20  # 12 MiB each: rendezvous, larger than a ring
    bufs = {p: np.empty(count, np.float32) for p in range(n)}
    with comm.group():
        sends = [comm.send(message(r, p, 2, count, salt=1), p, tag=2) for p in range(n)]
        recvs = [comm.recv(bufs[p], p, tag=2) for p in reversed(range(n))]
    for w in sends + recvs:
        w.wait()
    for p in range(n):
        assert np.array_equal(bufs[p], message(p, r, 2, count, salt=1)), p
    # A blocking receive from itself, after the send.
    x = message(r, r, 9, 10)
    comm.send(x, r, tag=9)
    y = np.empty(10, np.float32)
    assert comm.recv(y, r, tag=9) == r and np.array_equal(x, y)
    def nested():
        with comm.group():
            with comm.group():
                pass

    expect(ValueError, nested, "nest")


def sizes_and_errors(comm):
    """A shorter message with allow_shorter; a wrong size is a MismatchError
    (on both ranks when the message is large enough to wait for its
    receive); a receive nobody answers times out naming the peer and tag;
    bad arguments raise before anything is posted."""
    n, r = comm.size, comm.rank
    big = 100_000  # 400 KB: rendezvous
    if n == 1:
        pass
    elif r == 0:
        comm.send(message(0, 1, 3, 10), 1, tag=3)
        expect(pycomm.MismatchError, lambda: comm.send(np.ones(big, np.float32), 1, tag=8),
               "send to rank 1 (tag 8", "takes 40 bytes")
        expect(pycomm.MismatchError, lambda: comm.send(np.ones(big, np.float32), 1, tag=8), "takes 800000 bytes")
        # A small (eager) send completes first; its refusal fails rank 0's
        # next op with rank 1, named; the link goes on.
        comm.send(np.ones(10, np.float32), 1, tag=9)
        expect(pycomm.MismatchError, lambda: comm.recv(np.empty(3, np.float32), 1, tag=10),
               "send to rank 1 (tag 9, 40 bytes", "refused", "receive takes 20 bytes")
        assert comm.recv(np.empty(3, np.float32), 1, tag=10) == 1
    elif r == 1:
        buf = np.zeros(50, np.float32)
        w = comm.irecv(buf, 0, tag=3, allow_shorter=True)
        w.wait()
        assert w.count == 10 and np.array_equal(buf[:10], message(0, 1, 3, 10)) and not buf[10:].any()
        expect(pycomm.MismatchError, lambda: comm.recv(np.empty(10, np.float32), 0, tag=8),
               "recv from rank 0 (tag 8", "rank 0 sent 400000 bytes")
        expect(pycomm.MismatchError, lambda: comm.recv(np.empty(2 * big, np.float32), 0, tag=8),
               "allow_shorter")
        expect(pycomm.MismatchError, lambda: comm.recv(np.empty(5, np.float32), 0, tag=9),
               "rank 0 sent 40 bytes with tag 9")
        comm.send(np.ones(3, np.float32), 0, tag=10)
        t0 = time.monotonic()
        expect(pycomm.TimeoutError, lambda: comm.recv(np.empty(1, np.float32), 0, tag=42, timeout=0.5),
               "rank 0", "tag 42", "timeout")
        assert time.monotonic() - t0 < 3
    ro = np.ones(4, np.float32)
    ro.flags.writeable = False
    cases = [
        (ValueError, "send", (ro, n), {}),
        (ValueError, "send", (ro, -1), {}),
        (ValueError, "recv", (np.empty(1), n), {}),
        (TypeError, "send", (ro, "1"), {}),
        (TypeError, "send", (ro, True), {}),
        (TypeError, "send", (ro, 0), {"tag": 1.5}),
        (ValueError, "send", (ro, 0), {"tag": 2**40}),
        (ValueError, "recv", (ro, 0), {}),  # read-only receive buffer
        (TypeError, "send", ([1, 2], 0), {}),
        (ValueError, "send", (ro, 0), {"timeout": 0}),
        (TypeError, "recv", (np.empty(1),), {"src": 0, "source": 0}),
    ]
    # Each through the instance's method (a native fast path, bindings/fast_p2p.h)
    # and through the class's Python method: the same error, word for word.
    for exc, name, args, kwargs in cases:
        messages = set()
        for f in (getattr(comm, name), lambda *a, **k: getattr(pycomm.Communicator, name)(comm, *a, **k)):
            try:
                f(*args, **kwargs)
            except exc as e:
                messages.add(str(e).replace(f"Communicator.{name}()", f"{name}()"))
            else:
                raise AssertionError(f"{name}{args} {kwargs}: no {exc.__name__}")
        assert len(messages) == 1, messages
    comm.barrier()  # nothing was posted: the link still works
    z = np.ones(3, np.float32)
    comm.allreduce(z)
    assert z[0] == n


def beside_collectives(comm):
    """A posted receive does not hold up collectives, and collectives do not
    hold up point-to-point: receive first, collectives, then send."""
    n, r = comm.size, comm.rank
    buf = np.empty(50_000, np.float32)
    w = comm.irecv(buf, (r - 1) % n, tag=11)
    for _ in range(3):
        x = np.full(1000, r, np.float32)
        comm.allreduce(x)
        assert x[0] == n * (n - 1) / 2
    comm.send(message(r, (r + 1) % n, 11, 50_000), (r + 1) % n, tag=11)
    w.wait()
    assert np.array_equal(buf, message((r - 1) % n, r, 11, 50_000))


def blocking_large(comm):
    """Blocking sends of large messages, which on one host the receiver and
    the waiting sender copy in two parts (p2p_engine.h): sizes around the
    256 KiB threshold and off the page size, a receive posted late (the
    message waits unmatched), and a shorter message with allow_shorter."""
    n, r = comm.size, comm.rank
    to, frm = (r + 1) % n, (r - 1) % n
    for nbytes in (256 * 1024 - 1, 256 * 1024, 256 * 1024 + 4097, (5 << 20) + 3):
        out = message(r, to, 6, nbytes, "uint8")
        buf = np.zeros(nbytes, np.uint8)
        if r % 2 == 0:
            comm.send(out, to, tag=6)
            assert comm.recv(buf, frm, tag=6) == frm
        else:
            time.sleep(0.05)  # the send waits at the receiver, unmatched
            assert comm.recv(buf, frm, tag=6) == frm
            comm.send(out, to, tag=6)
        assert np.array_equal(buf, message(frm, r, 6, nbytes, "uint8")), nbytes
    nbytes = (1 << 20) + 5
    buf = np.full(nbytes + 4096, 7, np.uint8)
    w = comm.irecv(buf, frm, tag=7, allow_shorter=True)
    comm.send(message(r, to, 7, nbytes, "uint8"), to, tag=7)
    w.wait()
    assert w.count == nbytes and np.array_equal(buf[:nbytes], message(frm, r, 7, nbytes, "uint8"))
    assert (buf[nbytes:] == 7).all()


def sender_gives_up(comm):
    """A large blocking send times out before its receive is posted (on one
    host it has offered to copy a part: HELP). The sender gets TimeoutError.
    A receive posted later still gets the whole message where it copies out
    of the sender's memory (shm: the sender answers its PUSH with nothing
    written, so the receiver copies all), and times out cleanly where the
    payload needed the sender (tcp, mpi). The link goes on either way."""
    n, r = comm.size, comm.rank
    nbytes = (4 << 20) + 5
    if n >= 2 and r == 0:
        out = message(0, 1, 12, nbytes, "uint8")
        expect(pycomm.TimeoutError, lambda: comm.send(out, 1, tag=12, timeout=0.3), "rank 1", "timeout")
        assert comm.recv(np.empty(1, np.uint8), 1, tag=13) == 1  # rank 1 is done with `out`
    elif n >= 2 and r == 1:
        time.sleep(0.8)
        buf = np.zeros(nbytes, np.uint8)
        if comm.transport == "shm":
            assert comm.recv(buf, 0, tag=12) == 0
            assert np.array_equal(buf, message(0, 1, 12, nbytes, "uint8"))
        else:
            expect(pycomm.TimeoutError, lambda: comm.recv(buf, 0, tag=12, timeout=0.5), "rank 0", "tag 12")
        comm.send(np.ones(1, np.uint8), 0, tag=13)
    comm.barrier()


def one_gibibyte(comm):
    """Both ranks of a pair post a 1 GiB + 3 B receive first and the send
    second; every byte checked (random bytes repeating with a prime period,
    which divides no chunk or ring size)."""
    n, r = comm.size, comm.rank
    nbytes = (1 << 30) + 3
    pattern = lambda src: np.resize(np.random.default_rng([SEED, src]).integers(0, 256, 65521, np.uint8), nbytes)
    to, frm = (r + 1) % n, (r - 1) % n
    y = np.zeros(nbytes, np.uint8)
    rw = comm.irecv(y, frm, tag=2)
    comm.send(pattern(r), to, tag=2)
    rw.wait()
    assert rw.count == nbytes and np.array_equal(y, pattern(frm))


def peer_dies(comm):
    """The last rank dies; a receive from it and a large send to it fail with
    PeerLostError on the others, well before their timeout."""
    n, r = comm.size, comm.rank
    last = n - 1
    comm.barrier()
    if r == last:
        time.sleep(0.5)
        os._exit(3)
    t0 = time.monotonic()
    expect(pycomm.PeerLostError, lambda: comm.recv(np.empty(10, np.float32), last, tag=1, timeout=30), f"rank {last}")
    expect(pycomm.PeerLostError, lambda: comm.send(np.ones(1 << 20, np.float32), last, timeout=30), f"rank {last}")
    assert time.monotonic() - t0 < 15, time.monotonic() - t0
    print(f"rank {r}: peer loss seen in {time.monotonic() - t0:.1f} s", flush=True)
    os._exit(0)  # the communicator's peers are gone: skip the closing barrier


SCENARIOS = [pairs, irecv_first_large, any_source_and_order, group_and_self, sizes_and_errors, beside_collectives,
             blocking_large, sender_gives_up]


def main():
    names = sys.argv[1:] or [s.__name__ for s in SCENARIOS]
    comm = comm_from_env(timeout=120)
    for name in names:
        globals()[name](comm)
    log(comm, f"p2p ok on {comm.size} ranks over {comm.transport}: {' '.join(names)}")
    comm.barrier()
    comm.close()


if __name__ == "__main__":
    main()
