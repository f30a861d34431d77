"""Async ops and Work handles on 1-3 ranks."""
import pytest


@pytest.mark.parametrize("transport", ["shm", "tcp"])
@pytest.mark.parametrize("nranks", [1, 3])
def test_async(ranks, nranks, transport):
    proc = ranks(nranks, "async_ops.py", env={"TEST_TRANSPORT": transport}, timeout=60)
    assert "async ok" in proc.stdout
