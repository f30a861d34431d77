"""Point-to-point on 1-4 ranks over shared memory and TCP (ranks/p2p.py),
and a peer that dies while others send to it and receive from it."""
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.parametrize("transport", ["shm", "tcp"])
@pytest.mark.parametrize("nranks", [1, 2, 3, 4])
def test_p2p(ranks, nranks, transport):
    proc = ranks(nranks, "p2p.py", env={"TEST_TRANSPORT": transport})
    assert f"p2p ok on {nranks} ranks over {transport}" in proc.stdout


@pytest.mark.parametrize("transport", ["shm", "tcp"])
def test_p2p_one_gibibyte(ranks, transport):
    proc = ranks(2, "p2p.py", "one_gibibyte", env={"TEST_TRANSPORT": transport})
    assert f"p2p ok on 2 ranks over {transport}" in proc.stdout


@pytest.mark.parametrize("transport", ["shm", "tcp"])
def test_p2p_peer_dies(transport, tmp_path):
    # Plain processes: pycomm.launch would stop the survivors when one dies.
    n = 3
    env = dict(os.environ, WORLD_SIZE=str(n), TEST_TRANSPORT=transport, PYCOMM_STORE=f"file://{tmp_path}/store",
               PYTHONPATH=os.pathsep.join([os.path.join(HERE, "ranks"), os.environ.get("PYTHONPATH", "")]))
    procs = [subprocess.Popen([sys.executable, os.path.join(HERE, "ranks", "p2p.py"), "peer_dies"],
                              env=dict(env, RANK=str(r)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in range(n)]
    results = [p.communicate(timeout=90) for p in procs]
    for r, (p, (out, err)) in enumerate(zip(procs, results)):
        if r == n - 1:
            assert p.returncode == 3, (p.returncode, out, err[-2000:])
        else:
            assert p.returncode == 0 and f"rank {r}: peer loss seen" in out, (p.returncode, out, err[-3000:])
