"""The flight recorder (pycomm/flight.py, csrc/comm/flight_recorder.h): what
each entry holds, the ring's size and off switch, dumps on demand, on SIGUSR1
and on errors, and the analysis of a hang and of a mismatch on 3 ranks by
pycomm.flight and by torch's own analyzer."""
import os
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import pycomm
from pycomm import flight


def make(tmp_path, **kw):
    return pycomm.Communicator(0, 1, pycomm.FileStore(str(tmp_path / "store")), timeout=10, **kw)


def test_entries(tmp_path):
    with make(tmp_path) as comm:
        t0 = time.time_ns()
        comm.allreduce(np.ones(3, np.float32), op="max")
        comm.broadcast(np.ones(2, np.int64), root=0)
        comm.allgather(np.ones(8, np.float32), compress="int8", block_size=32)
        comm.allreduce(np.ones(5, np.float16), async_op=True).wait()
        comm.send(np.arange(6, dtype=np.int32), 0, tag=3)
        comm.recv(np.empty(6, np.int32), None, tag=3)
        rec = comm.flight_record()
    p2p = [e for e in rec if e["p2p"]]
    rec = [e for e in rec if not e["p2p"]]
    assert [(e["seq"], e["operation"], e["peer"], e["tag"], e["dtype"], e["count"], e["state"]) for e in p2p] == [
        (0, "send", 0, 3, "int32", 6, "completed"), (1, "recv", -1, 3, "int32", 6, "completed")]
    assert [e["seq"] for e in rec] == [0, 1, 2, 3]
    assert [e["operation"] for e in rec] == ["allreduce", "broadcast", "allgather_int8", "allreduce"]
    assert [(e["dtype"], e["count"]) for e in rec] == [("float32", 3), ("int64", 2), ("float32", 8), ("float16", 5)]
    assert rec[0]["op"] == "max" and rec[1]["op"] is None and rec[1]["root"] == 0 and rec[2]["block_size"] == 32
    for e in rec:
        assert e["state"] == "completed" and e["error"] is None and not e["device"]
        assert t0 <= e["queued_ns"] <= e["started_ns"] <= e["ended_ns"] <= time.time_ns()


def test_ring_size_and_off(tmp_path, monkeypatch):
    monkeypatch.setenv("PYCOMM_FLIGHT_RECORDER", "3")
    with make(tmp_path) as comm:
        for _ in range(7):
            comm.barrier()
        assert [e["seq"] for e in comm.flight_record()] == [4, 5, 6]
    monkeypatch.setenv("PYCOMM_FLIGHT_RECORDER", "0")
    with make(tmp_path, name="off") as comm:
        comm.barrier()
        assert comm.flight_record() == []


def test_dump_is_torch_format(tmp_path):
    with make(tmp_path, name="dumped") as comm:
        comm.allreduce(np.ones(4, np.float32))
        comm.reduce_scatter(np.ones(4, np.float32))
        path = comm.dump_flight_record(str(tmp_path / "pycomm_dumped_rank_0"))
    with open(path, "rb") as f:
        d = pickle.load(f)
    assert d["version"] == "2.10" and d["pg_config"]["dumped"]["ranks"] == "[0]"
    e = d["entries"][1]
    assert e["profiling_name"] == "gloo:_reduce_scatter_base" and e["collective_seq_id"] == 2
    assert e["input_sizes"] == [[4]] and e["output_sizes"] == [[4]] and e["state"] == "completed"
    assert d["pycomm"]["entries"][0]["operation"] == "allreduce"
    with pytest.raises(ValueError, match="PYCOMM_FLIGHT_DIR"):
        with make(tmp_path, name="nowhere") as comm:
            comm.dump_flight_record()


def test_dump_on_signal(tmp_path, monkeypatch):
    monkeypatch.setenv("PYCOMM_FLIGHT_DIR", str(tmp_path / "fr"))
    monkeypatch.setenv("PYCOMM_FLIGHT_SIGNAL", "1")
    old = signal.getsignal(signal.SIGUSR1)
    try:
        with make(tmp_path, name="sig") as comm:
            comm.barrier()
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(0.1)
            assert os.listdir(tmp_path / "fr") == ["pycomm_sig_rank_0"]
    finally:
        signal.signal(signal.SIGUSR1, old)


def analyze(folder):
    proc = subprocess.run([sys.executable, "-m", "pycomm.flight", str(folder)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def torch_analyze(folder, prefix):
    pytest.importorskip("torch.distributed.flight_recorder.fr_trace")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.flight_recorder.fr_trace", str(folder),
                           "-p", prefix], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def scenario(ranks, tmp_path, n, name, k, env=None):
    """Runs ranks/flight.py's scenario on n ranks; pycomm's analysis of the
    dumps, and the name prefix of their files (for torch's analyzer)."""
    ranks(n, "flight.py", name, k, env={"PYCOMM_FLIGHT_DIR": str(tmp_path), **(env or {})}, timeout=60)
    return analyze(tmp_path), sorted(os.listdir(tmp_path))[0][:-1]


@pytest.mark.parametrize("transport", ["shm", "tcp"])
def test_hang_names_the_rank_and_op(ranks, tmp_path, transport):
    # Rank 2 stops calling after op #5 (4 allreduces and a barrier); ranks 0 and 1 time out in op #5.
    text, prefix = scenario(ranks, tmp_path, 3, "hang", 4, env={"TEST_TRANSPORT": transport})
    files = sorted(os.listdir(tmp_path))
    assert len(files) == 3 and all(f.startswith("pycomm_") and f[-1] in "012" for f in files), files
    assert "op #5 did not complete everywhere" in text, text
    assert "ranks not joining op #5: [2] (their last recorded op: rank 2 #4)" in text, text
    assert "rank 0: allreduce #5, float32 x 4, sum: failed: " in text and "timeout after 3 s" in text, text
    out = torch_analyze(tmp_path, prefix)
    assert "Not all ranks joining collective" in out and "missing ranks: {2}" in out, out[-3000:]


def test_mismatch_names_both_calls(ranks, tmp_path):
    text, prefix = scenario(ranks, tmp_path, 3, "mismatch", 2)
    assert "op #2 did not complete everywhere" in text, text
    assert "mismatched calls in op #2:" in text, text
    assert "ranks [0, 2]: allreduce #2, float32 x 4, sum" in text and "ranks [1]: allreduce #2, float32 x 5, sum" in text
    out = torch_analyze(tmp_path, prefix)
    assert "Culprit rank" in out and "input sizes" in out, out[-3000:]


def test_p2p_names_the_unmatched_send_and_recv(ranks, tmp_path):
    text, prefix = scenario(ranks, tmp_path, 2, "p2p", 2)
    assert "every recorded collective op completed on every rank" in text, text
    assert "rank 0: send #1 to rank 1, tag 5, float32 x 262144: failed: " in text, text
    assert "rank 1 posted no matching recv: 1 recv(s) with rank 0 and tag 5; this is send number 2" in text, text
    assert "rank 1: recv #1 from rank 0, tag 7, float32 x 262144: failed: " in text, text
    assert "rank 0 posted no matching send: 0 send(s) with rank 1 and tag 7; this is recv number 1" in text, text
    assert "send #0" not in text and "recv #0" not in text  # completed ones are not reported
    out = torch_analyze(tmp_path, prefix)  # collectives only, all complete
    assert "Traceback" not in out, out[-3000:]


def test_analyzer_without_records(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pycomm.flight", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 1 and "no pycomm flight records" in proc.stderr
    assert flight.analyze({}) == []


def test_torch_group_records_under_its_name(tmp_path):
    # A "pycomm" process group's records carry torch's group name and global ranks.
    torch = pytest.importorskip("torch")
    code = f"""
import torch, torch.distributed as dist, pycomm.torch
dist.init_process_group("pycomm", init_method="file://{tmp_path}/init", rank=0, world_size=1)
dist.all_reduce(torch.ones(3))
g = dist.new_group([0], backend="pycomm")
dist.all_reduce(torch.ones(2), group=g)
print(pycomm.torch.communicator().dump_flight_record(), pycomm.torch.communicator(g).dump_flight_record())
dist.destroy_process_group()
"""
    env = {**os.environ, "PYCOMM_FLIGHT_DIR": str(tmp_path / "fr")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    default, sub = proc.stdout.split()
    with open(default, "rb") as f:
        d = pickle.load(f)
    assert os.path.basename(default) == "pycomm_0_rank_0" and list(d["pg_config"]) == ["0"]
    assert d["pg_config"]["0"]["ranks"] == "[0]" and d["entries"][0]["process_group"] == ("0", "pycomm")
    assert os.path.basename(sub) != os.path.basename(default) and sub.endswith("_rank_0")
