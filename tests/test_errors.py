"""Mismatched calls, timeouts and bad input: clear errors on every rank, no hang."""
import pytest


@pytest.mark.parametrize("transport", ["shm", "tcp"])
@pytest.mark.parametrize("scenario,nranks", [("mismatch", 2), ("mismatch", 3), ("mismatch_op", 2), ("mismatch_kinds", 2),
                                             ("timeout", 2), ("abort", 2), ("bad_input", 2)])
def test_error_scenario(ranks, scenario, nranks, transport):
    proc = ranks(nranks, "errors.py", scenario, env={"TEST_TRANSPORT": transport}, timeout=60)
    assert f"{scenario} ok" in proc.stdout
