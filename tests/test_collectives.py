"""Every collective on 1-4 ranks over both transports (see ranks/collectives.py)."""
import pytest


@pytest.mark.parametrize("transport", ["shm", "tcp"])
@pytest.mark.parametrize("nranks", [1, 2, 3, 4])
def test_collectives(ranks, nranks, transport):
    proc = ranks(nranks, "collectives.py", env={"TEST_TRANSPORT": transport})
    assert f"collectives ok on {nranks} ranks over {transport}" in proc.stdout


@pytest.mark.parametrize("nranks", [2, 3])
def test_collectives_shm_single_copy(ranks, nranks):
    # Every payload of alltoall through the shm transport's single-copy
    # channel (shm_transport.h), from one byte up, whatever the CPU count
    # (by default it is on only where ranks outnumber CPUs).
    proc = ranks(nranks, "collectives.py", env={"TEST_TRANSPORT": "shm", "PYCOMM_SHM_CMA_BYTES": "1"})
    assert f"collectives ok on {nranks} ranks over shm" in proc.stdout
