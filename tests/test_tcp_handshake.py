"""The TCP transport refuses connections without the job's token, and the
job carries on, also past strangers that connect and say nothing or half a
hello (slow-loris). Two ranks run in threads of this process; a stranger
connects to rank 0's port while the mesh is being built."""
import socket
import struct
import threading
import time

import numpy as np

import pycomm


class StrangerAtTheDoor(pycomm.FileStore):
    """A store that, as rank 1 learns rank 0's TCP endpoint, first sends
    rank 0 a garbage connection and one with a well-formed hello but the
    wrong token."""

    def allgather(self, prefix, rank, size, data, timeout):
        result = super().allgather(prefix, rank, size, data, timeout)
        if rank == 1 and prefix.endswith("/boot0"):
            host, port = result[0].decode().rsplit(" ", 1)
            garbage = socket.create_connection((host, int(port)))
            garbage.sendall(b"GET / HTTP/1.0\r\n\r\n" + bytes(64))
            impostor = socket.create_connection((host, int(port)))
            # magic, protocol, rank, nranks, kind, reserved, token (wrong)
            impostor.sendall(struct.pack("<6I", 0x50434F4D, 1, 1, 2, 0, 0) + b"\x00" * 32)
            silent = socket.create_connection((host, int(port)))  # says nothing, stays
            partial = socket.create_connection((host, int(port)))
            partial.sendall(struct.pack("<I", 0x50434F4D)[:3])  # a third of a word, then nothing
            self.strangers = [garbage, impostor]
            self.loris = [silent, partial]
        return result


def test_strangers_are_dropped_and_the_job_is_unaffected(tmp_path):
    stores = [StrangerAtTheDoor(str(tmp_path)) for _ in range(2)]
    results, errors = [None, None], []

    def rank_main(rank):
        try:
            with pycomm.Communicator(rank, 2, stores[rank], transport="tcp", timeout=30,
                                     name="handshake") as comm:
                x = np.full(1000, rank + 1, np.float32)
                comm.allreduce(x)
                results[rank] = x
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(2)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert time.monotonic() - t0 < 4, "silent strangers stalled the mesh (each may cost 2 s when hellos are read one by one)"
    for x in results:
        assert x is not None and np.all(x == 3)
    for s in stores[1].strangers:  # rank 0 hung up on both (a reset when bytes were left unread)
        s.settimeout(5)
        try:
            assert s.recv(1) == b""
        except ConnectionResetError:
            pass
