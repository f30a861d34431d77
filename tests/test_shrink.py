"""Shrink to the survivors (pycomm/shrink.py): a rank SIGKILLed at an op of a
mixed workload on 3 and 4 ranks, over shared memory and TCP; every survivor
fails in that op within its timeout, its flight records name the dead rank,
shrink() gives a working communicator of the survivors, nothing is left in
/dev/shm and no process hangs. Also: a rank
that is alive but does not take part makes the others' shrink fail with its
name, and a world of one shrinks to itself."""
import os
import random
import signal
import subprocess
import sys

import numpy as np
import pytest

import pycomm
from pycomm import flight

HERE = os.path.dirname(os.path.abspath(__file__))
RANKS = os.path.join(HERE, "ranks")


def shm_files():
    return {f for f in os.listdir("/dev/shm") if f.startswith("pycomm")}


def start(n, script, args, tmp_path, transport, extra_env=None):
    env = {**os.environ, "WORLD_SIZE": str(n), "PYCOMM_STORE": f"file://{tmp_path}/store",
           "TEST_TRANSPORT": transport, "PYTHONPATH": os.pathsep.join([RANKS, os.environ.get("PYTHONPATH", "")]),
           **(extra_env or {})}
    return [subprocess.Popen([sys.executable, os.path.join(RANKS, script), *map(str, args)],
                             env={**env, "RANK": str(r)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for r in range(n)]


def finish(procs, timeout=90):
    out = []
    try:
        for p in procs:
            o, e = p.communicate(timeout=timeout)
            out.append((p.returncode, o, e))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return out


TRIALS = [(n, transport, seed) for n in (3, 4) for transport in ("shm", "tcp") for seed in range(2)]


@pytest.mark.parametrize("n,transport,seed", TRIALS)
def test_killed_rank_then_shrink(tmp_path, n, transport, seed):
    rng = random.Random(seed * 10 + n)
    victim, kill_at = rng.randrange(n), rng.randrange(1, 12)
    before = shm_files()
    fr = tmp_path / "fr"
    results = finish(start(n, "shrink.py", [victim, kill_at], tmp_path, transport,
                           extra_env={"PYCOMM_FLIGHT_DIR": str(fr)}))
    for r, (code, out, err) in enumerate(results):
        if r == victim:
            assert code == -signal.SIGKILL, (code, err[-2000:])
        else:
            assert code == 0, f"rank {r}: exit {code}\n{out}\n{err[-3000:]}"
            assert f"shrank to rank {[p for p in range(n) if p != victim].index(r)} of {n - 1}" in out, out
            shrink_s = float(out.rsplit(" in ", 1)[1].split()[0])
            assert shrink_s < 5.0, out  # issue 21's target is under 1 s; CI machines are shared
    assert shm_files() <= before, f"left in /dev/shm: {shm_files() - before}"
    # The survivors' flight records, written as their error reached Python, name the dead rank.
    text = "\n".join(flight.analyze(flight.load(fr)))
    assert f"no dump from rank(s) [{victim}]" in text and "did not complete everywhere" in text, text


def test_silent_rank_is_named(tmp_path):
    # Rank 2 is alive (its links open) but never calls shrink: ranks 0 and 1 fail naming it.
    code = """
import sys, time, pycomm
comm = pycomm.Communicator.from_env(timeout=5)
comm.barrier()
if comm.rank == 2:
    time.sleep(8)
else:
    try:
        comm.shrink(timeout=2)
    except pycomm.CommError as e:
        assert "rank 2 is alive" in str(e) and "did not join the shrink" in str(e), e
        print("named", flush=True)
    else:
        raise AssertionError("shrink went on without a live rank")
"""
    path = tmp_path / "silent.py"
    path.write_text(code)
    env = {**os.environ, "WORLD_SIZE": "3", "PYCOMM_STORE": f"file://{tmp_path}/store"}
    procs = [subprocess.Popen([sys.executable, str(path)], env={**env, "RANK": str(r)}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for r in range(3)]
    results = finish(procs, timeout=60)
    for r, (rc, out, err) in enumerate(results):
        assert rc == 0, (r, err[-3000:])
        assert ("named" in out) == (r != 2)


def test_world_of_one(tmp_path):
    store = pycomm.FileStore(str(tmp_path / "store"))
    with pycomm.Communicator(0, 1, store, timeout=10) as comm:
        with comm.shrink() as new:
            assert (new.rank, new.size) == (0, 1)
            x = np.ones(3, np.float32)
            assert np.array_equal(new.allreduce(x), x)
    store.close()


def test_torch_group_shrinks(tmp_path):
    pytest.importorskip("torch")
    env = {"MASTER_ADDR": "127.0.0.1"}
    procs = start(3, "torch_shrink.py", [tmp_path / "init"], tmp_path, "shm", extra_env=env)
    results = finish(procs, timeout=120)
    for r, (code, out, err) in enumerate(results):
        if r == 1:
            assert code == -signal.SIGKILL, (code, err[-2000:])
        else:
            assert code == 0 and "ddp ok" in out, (r, code, out, err[-3000:])
