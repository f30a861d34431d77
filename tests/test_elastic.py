"""Elastic restarts (issue 21): a torchrun job on "pycomm" whose rank 1 is
SIGKILLed mid-training (twice) is restarted by torchrun, resumes from its last
checkpoint (model, optimizer and the int8 hook's error-feedback residuals)
and ends bitwise where an uninterrupted run ends; resumed without the
residuals it does not, which shows the residuals are what carries it."""
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "ranks", "torch_elastic.py")


def shm_files():
    return {f for f in os.listdir("/dev/shm") if f.startswith("pycomm")}


def torchrun(tmp_path, name, *args):
    out = tmp_path / name
    out.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc-per-node=3",
           "--max-restarts=2", "--monitor-interval=0.1", SCRIPT, str(out), *args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=240,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(HERE),
                                                                         os.environ.get("PYTHONPATH", "")])})
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-6000:]
    with open(out / "result.json") as f:
        return json.load(f)


def test_killed_rank_restarts_from_checkpoint(tmp_path):
    before = shm_files()
    whole = torchrun(tmp_path, "whole")
    killed = torchrun(tmp_path, "killed", "--kill-at", "10,11")
    forgot = torchrun(tmp_path, "forgot", "--kill-at", "10", "--forget-int8")
    assert whole["attempt"] == 0 and whole["resumed_from"] == 0
    # torchrun restarted the group twice: from the step-8 checkpoint, then from
    # the one taken right after resuming (step 9), while the restored buckets
    # still travelled in the saved order.
    assert killed["attempt"] == 2 and killed["resumed_from"] == 9, killed
    assert killed["losses"] == whole["losses"]
    assert killed["params"] == whole["params"]
    # The control: the same restart without the residuals drifts.
    assert forgot["attempt"] == 1 and forgot["losses"][:9] == whole["losses"][:9]
    assert forgot["params"] != whole["params"]
    assert shm_files() <= before, "shared memory left behind by the killed attempt"
