"""Every collective on 1-4 ranks over both transports (see ranks/collectives.py)."""
import pytest


@pytest.mark.parametrize("transport", ["shm", "tcp"])
@pytest.mark.parametrize("nranks", [1, 2, 3, 4])
def test_collectives(ranks, nranks, transport):
    proc = ranks(nranks, "collectives.py", env={"TEST_TRANSPORT": transport})
    assert f"collectives ok on {nranks} ranks over {transport}" in proc.stdout
