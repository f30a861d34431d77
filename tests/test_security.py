"""What a neighbour on the machine can see of a job: shared-memory segments
0600 under unpredictable names (and gone once the ranks are connected),
store files 0600, nothing world-writable, listening sockets on the chosen
address rather than 0.0.0.0. Two ranks in threads of this process."""
import os
import re
import stat
import threading

import numpy as np

import pycomm


class Watcher(pycomm.FileStore):
    """Records /dev/shm and the advertised endpoints at each bootstrap step."""

    def allgather(self, prefix, rank, size, data, timeout):
        result = super().allgather(prefix, rank, size, data, timeout)
        if rank == 0:
            segs = {}
            for name in os.listdir("/dev/shm"):
                if name.startswith("pycomm-"):
                    try:
                        segs[name] = os.stat(f"/dev/shm/{name}").st_mode
                    except FileNotFoundError:
                        pass
            self.seen.append((prefix, segs, result))
        return result


def run_job(tmp_path, transport):
    stores = [Watcher(str(tmp_path)) for _ in range(2)]
    stores[0].seen = []
    before = {n for n in os.listdir("/dev/shm") if n.startswith("pycomm-")}
    errors = []

    def rank_main(rank):
        try:
            with pycomm.Communicator(rank, 2, stores[rank], transport=transport, timeout=30,
                                     name="security") as comm:
                comm.allreduce(np.ones(8, np.float32))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    after = {n for n in os.listdir("/dev/shm") if n.startswith("pycomm-")}
    return stores[0].seen, before, after


def test_shared_memory_segments(tmp_path):
    seen, before, after = run_job(tmp_path, "shm")
    ours = {}
    for _, segs, _ in seen:
        ours.update({n: m for n, m in segs.items() if n not in before})
    # One per rank and set of links (the collectives', point-to-point's), seen while the ranks connected.
    assert len(ours) == 4, ours
    for name, mode in ours.items():
        assert stat.S_IMODE(mode) == 0o600, (name, oct(mode))
        m = re.fullmatch(r"pycomm-([0-9a-f]+)-r\d+", name)
        assert m and len(m.group(1)) >= 16, f"{name}: the name must carry >= 64 random bits"
    assert not (after - before), f"left behind: {after - before}"
    # A second job draws other names.
    seen2, before2, _ = run_job(tmp_path / "again", "shm")
    ours2 = {n for _, segs, _ in seen2 for n in segs if n not in before2}
    assert ours2 and not (ours2 & set(ours))


def test_files_and_sockets(tmp_path):
    seen, _, _ = run_job(tmp_path, "tcp")
    for root, dirs, files in os.walk(tmp_path):
        for f in files + dirs:
            mode = os.stat(os.path.join(root, f)).st_mode
            assert not mode & stat.S_IWOTH, f"{f} is world-writable ({oct(mode)})"
            if f in files:
                assert stat.S_IMODE(mode) & 0o077 == 0, f"{f} is readable by others ({oct(mode)})"
    endpoints = [e.decode() for prefix, _, result in seen if prefix.endswith("/boot0") for e in result]
    assert endpoints, seen
    for e in endpoints:  # "address port": all ranks on one host listen on loopback
        assert e.split(" ")[0] == "127.0.0.1", e
