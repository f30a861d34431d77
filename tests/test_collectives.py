"""Every collective on 1-4 ranks over both transports (see ranks/collectives.py)."""
import pytest


@pytest.mark.parametrize("transport", ["shm", "tcp"])
@pytest.mark.parametrize("nranks", [1, 2, 3, 4])
def test_collectives(ranks, nranks, transport):
    proc = ranks(nranks, "collectives.py", env={"TEST_TRANSPORT": transport})
    assert f"collectives ok on {nranks} ranks over {transport}" in proc.stdout


@pytest.mark.parametrize("nranks", [2, 3])
def test_collectives_shm_single_copy(ranks, nranks):
    # Every payload of alltoall, gather and scatter through the shm
    # transport's single-copy channel (shm_transport.h), from one byte up,
    # whatever the CPU count (by default from 1 MiB, or 64 KiB where ranks
    # outnumber CPUs); gather's and scatter's split between sender and
    # receiver from 512 KiB, also with more ranks than CPUs (by default off there).
    proc = ranks(nranks, "collectives.py",
                 env={"TEST_TRANSPORT": "shm", "PYCOMM_SHM_CMA_BYTES": "1", "PYCOMM_SHM_SPLIT": "1"})
    assert f"collectives ok on {nranks} ranks over shm" in proc.stdout
