"""The mpirun programs in tests/mpi/, under mpirun -n 2, 3 and 4 (skipped,
with the reason, where mpi4py or mpirun is missing; CI installs both)."""
import os
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
MISSING = None
try:
    import mpi4py  # noqa: F401
except ImportError:
    MISSING = "mpi4py is not installed (pip install -e '.[mpi]')"
if MISSING is None and shutil.which("mpirun") is None:
    MISSING = "mpirun is not on PATH"


def mpirun(n, program, timeout=600):
    # What an MPI user on this machine types, plus what the machine needs:
    # root (Open MPI refuses it without the flag) and more ranks than cores.
    cmd = ["mpirun", "-n", str(n), "--oversubscribe", "--bind-to", "none"]
    if os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    cmd += [sys.executable, os.path.join(HERE, "mpi", program)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.skipif(MISSING is not None, reason=MISSING or "")
@pytest.mark.parametrize("n", [2, 3, 4])
def test_mpi_collectives(n):
    proc = mpirun(n, "collectives.py")
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    assert f"mpi collectives ok on {n} ranks" in proc.stdout
