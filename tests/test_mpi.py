"""The mpirun programs in tests/mpi/, under mpirun -n 2, 3 and 4, over
pycomm's own transports and over the MPI transport (skipped, with the
reason, where mpi4py or mpirun is missing; CI installs both and builds the
MPI transport)."""
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


def mpirun(n, program, timeout=600, transport=None, env_extra=None):
    # What an MPI user on this machine types, plus what the machine needs:
    # root (Open MPI refuses it without the flag) and more ranks than cores.
    cmd = ["mpirun", "-n", str(n), "--oversubscribe", "--bind-to", "none"]
    if os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    cmd += [sys.executable, os.path.join(HERE, "mpi", program)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if transport:
        env["PYCOMM_TRANSPORT"] = transport  # mpirun passes the environment on to local ranks
    env.update(env_extra or {})
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def check(proc, done):
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    assert done in proc.stdout, proc.stdout[-4000:]


@pytest.mark.skipif(MISSING is not None, reason=MISSING or "")
@pytest.mark.parametrize("n", [2, 3, 4])
def test_mpi_collectives(n):
    check(mpirun(n, "collectives.py"), f"mpi collectives ok on {n} ranks over shm")


def mpi_transport_missing():
    """Why the MPI transport cannot be tested here, or None. CI sets
    PYCOMM_REQUIRE_MPI_TRANSPORT=1: there a missing transport fails."""
    why = MISSING
    if why is None:
        from pycomm.mpi import transport_available

        ok, detail = transport_available()
        why = None if ok else detail
    if why and os.environ.get("PYCOMM_REQUIRE_MPI_TRANSPORT") == "1":
        pytest.fail(f"PYCOMM_REQUIRE_MPI_TRANSPORT=1 but {why}")
    return why


@pytest.mark.parametrize("n", [2, 3, 4])
def test_mpi_transport_collectives(n):
    missing = mpi_transport_missing()
    if missing:
        pytest.skip(missing)
    check(mpirun(n, "collectives.py", transport="mpi"), f"mpi collectives ok on {n} ranks over mpi")


# Tiny stream messages and payload-channel messages, few slots: every payload
# is cut into many messages, frames carry inline prefixes, the slots wrap, and
# the broadcast chain (3 ranks) forwards message by message; point-to-point
# payloads go through the channel in many pieces.
SMALL_MESSAGES = {"PYCOMM_MPI_CHUNK_BYTES": "4096", "PYCOMM_MPI_SLOTS": "2", "PYCOMM_MPI_EAGER_BYTES": "256",
                  "PYCOMM_MPI_CHANNEL_BYTES": "1000"}


@pytest.mark.parametrize("program,done", [("collectives.py", "mpi collectives ok on 3 ranks over mpi"),
                                          ("p2p.py", "mpi p2p ok on 3 ranks over mpi")])
def test_mpi_transport_small_messages(program, done):
    missing = mpi_transport_missing()
    if missing:
        pytest.skip(missing)
    check(mpirun(3, program, transport="mpi", env_extra=SMALL_MESSAGES), done)


@pytest.mark.skipif(MISSING is not None, reason=MISSING or "")
@pytest.mark.parametrize("n", [2, 3])
def test_mpi_p2p(n):
    check(mpirun(n, "p2p.py"), f"mpi p2p ok on {n} ranks over shm")


@pytest.mark.parametrize("n", [2, 3])
def test_mpi_transport_p2p(n):
    missing = mpi_transport_missing()
    if missing:
        pytest.skip(missing)
    check(mpirun(n, "p2p.py", transport="mpi"), f"mpi p2p ok on {n} ranks over mpi")


@pytest.mark.parametrize("n", [2, 3])
def test_mpi_transport_errors(n):
    missing = mpi_transport_missing()
    if missing:
        pytest.skip(missing)
    check(mpirun(n, "transport_errors.py"), f"mpi transport errors ok on {n} ranks")


def test_mpi_transport_needs_an_mpi_communicator(tmp_path):
    import pycomm
    from pycomm.store import FileStore

    with pytest.raises(ValueError, match="from_mpi"):
        pycomm.Communicator(0, 1, FileStore(str(tmp_path)), transport="mpi")
