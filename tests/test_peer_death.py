"""kill -9 of a rank in the middle of each collective, over shared memory and
TCP: every survivor raises PeerLostError naming the lost rank within the
timeout + 1 s and exits cleanly, and nothing is left in /dev/shm. Also when
the dead rank served the TCP store (rank 0)."""
import os
import re
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
PROGRAM = os.path.join(HERE, "ranks", "peer_death.py")
TIMEOUT = 5.0
NRANKS = 3


def shm_segments():
    try:
        return {f for f in os.listdir("/dev/shm") if f.startswith("pycomm-")}
    except FileNotFoundError:
        return set()


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_job(coll, victim, transport, tmp_path, store="file"):
    # PYCOMM_SHM_SPLIT: gather's and scatter's blocks split between sender and
    # receiver even with more ranks than CPUs.
    env = dict(os.environ, WORLD_SIZE=str(NRANKS), TEST_TRANSPORT=transport, OMP_NUM_THREADS="1",
               PYCOMM_SHM_SPLIT="1",
               PYTHONPATH=os.pathsep.join([os.path.join(HERE, "ranks"), os.environ.get("PYTHONPATH", "")]))
    if store == "file":
        env["PYCOMM_STORE"] = f"file://{tmp_path}/store"
    else:  # rank 0 serves a TCP store
        env.pop("PYCOMM_STORE", None)
        env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    procs = [subprocess.Popen([sys.executable, PROGRAM, coll, str(victim), str(TIMEOUT)],
                              env=dict(env, RANK=str(r)), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for r in range(NRANKS)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=TIMEOUT * 6 + 30)  # nothing may hang
        results.append((p.returncode, out, err))
    return results


CASES = [(c, t) for t in ("shm", "tcp")
         for c in ("allreduce", "reduce_scatter", "allgather", "broadcast", "int8_allreduce", "alltoall", "gather",
                   "scatter")]


@pytest.mark.parametrize("coll,transport", CASES)
def test_kill_mid_collective(coll, transport, tmp_path):
    before = shm_segments()
    check(run_job(coll, 1, transport, tmp_path), victim=1)
    assert shm_segments() <= before, f"left in /dev/shm: {shm_segments() - before}"


@pytest.mark.parametrize("transport", ["shm", "tcp"])
def test_kill_the_store_host(transport, tmp_path):
    check(run_job("allreduce", 0, transport, tmp_path, store="tcp"), victim=0)


def check(results, victim):
    for r, (code, out, err) in enumerate(results):
        if r == victim:
            assert code == -9, f"the victim exited {code}\n{out}\n{err[-3000:]}"
            continue
        assert code == 0, f"survivor {r} exited {code}\n{out}\n{err[-3000:]}"
        m = re.search(rf"survivor {r}: PeerLostError after ([\d.]+) s: (.*)", out)
        assert m, f"survivor {r} printed no PeerLostError:\n{out}\n{err[-3000:]}"
        assert float(m.group(1)) <= TIMEOUT + 1, out
        assert f"rank {victim}" in m.group(2), f"the error does not name rank {victim}: {m.group(2)}"
