"""Every collective and the compressed allreduce across 3 emulated hosts x 2
ranks (network namespaces joined by a bridge, bench/cluster.py): TCP between
the hosts, checked against numpy on every rank; the torch backend and DDP;
and the mpirun programs on 2 hosts launched by Open MPI. Runs where root and `ip
netns` are available (CI), skipped with the reason elsewhere."""
import importlib.util
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "bench"))
import cluster  # noqa: E402

WHY = cluster.available()
pytestmark = [pytest.mark.cluster, pytest.mark.skipif(WHY is not None, reason=f"emulated cluster: {WHY}")]


def run(program, *args, env=None):
    env = {"PYTHONPATH": os.pathsep.join([os.path.join(HERE, "ranks"), os.environ.get("PYTHONPATH", "")]),
           **(env or {})}
    with cluster.Cluster(hosts=3) as c:
        results = c.run(2, [os.path.join(HERE, "ranks", program), *args], env=env, timeout=300)
        names = list(c.made)
    bad = [(r, code, err[-3000:]) for r, code, out, err in results if code != 0]
    assert not bad, bad
    leftover = set(os.popen("ip netns list").read().split()) & set(names)
    assert not leftover, f"namespaces left behind: {leftover}"
    return "".join(out + err for _, _, out, err in results)


def test_collectives_across_hosts_hierarchical():
    # 3 hosts x 2 ranks: allreduce goes hierarchical (shm inside, TCP across), and says so.
    # Small pipeline pieces: 65537 elements run as 16 pieces, 1001 as a few.
    text = run("collectives.py", "0,1,7,1001,65537",
               env={"PYCOMM_DEBUG": "INFO", "PYCOMM_HIERARCHY_PIECE_BYTES": "1024"})
    assert "collectives ok on 6 ranks over tcp" in text
    assert "hierarchical allreduce and int8 reduce_scatter: 3 hosts x 2 ranks (inside hosts over shm, " \
           "across over tcp)" in text


def test_collectives_across_hosts_flat():
    text = run("collectives.py", "1,1001", env={"PYCOMM_DEBUG": "INFO", "PYCOMM_HIERARCHICAL": "0"})
    assert "collectives ok on 6 ranks over tcp" in text and "hierarchical" not in text


def test_compressed_across_hosts():
    # The int8 reduce_scatter of float32 goes hierarchical (checked bitwise against its simulation).
    text = run("compressed.py", env={"PYCOMM_DEBUG": "INFO"})
    assert "compressed ok on 6 ranks" in text and "hierarchical allreduce and int8 reduce_scatter" in text


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_torch_backend_and_ddp_across_hosts():
    # init_process_group("pycomm") across hosts: the TCP transport listens on
    # the address that routes to the c10d store (the hostname, which every
    # namespace shares, resolves to an address no peer reaches: init hung).
    # Every all_reduce overlapped, as auto does for large ones across hosts.
    env = {"PYCOMM_TORCH_OVERLAP": "1", "DDP_STEPS": "20"}
    assert "torch backend ok" in run("torch_backend.py", env=env)
    assert "ddp ok" in run("torch_ddp.py", env=env)


def test_cleanup_on_failure():
    with pytest.raises(RuntimeError):
        with cluster.Cluster(hosts=2) as c:
            made = list(c.made)
            raise RuntimeError("boom")
    assert not set(os.popen("ip netns list").read().split()) & set(made)


@pytest.mark.skipif(cluster.shutil.which("mpirun") is None, reason="mpirun is not on PATH")
@pytest.mark.parametrize("transport", ["auto", "mpi"])
def test_mpirun_across_hosts(transport, monkeypatch):
    # Open MPI launched across 2 emulated hosts (its daemons started through
    # the namespace-entering agent): from_mpi over pycomm's TCP, or over MPI
    # point-to-point riding Open MPI's TCP transport.
    if transport == "mpi":
        from pycomm.mpi import transport_available

        ok, why = transport_available()
        if not ok:
            pytest.skip(why)
    monkeypatch.setenv("PYCOMM_TRANSPORT", transport)  # the cluster passes PYCOMM_* on to every rank
    with cluster.Cluster(hosts=2) as c:
        proc = c.mpirun(1, [os.path.join(HERE, "mpi", "collectives.py")], timeout=300)
        made = list(c.made)
    want = "tcp" if transport == "auto" else "mpi"
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert f"mpi collectives ok on 2 ranks over {want}" in proc.stdout, proc.stdout[-3000:]
    assert not set(os.popen("ip netns list").read().split()) & set(made)
