"""The short fuzz in CI: a seeded random mix of every collective (int8
included), dtypes, ops, sizes, sync and async, on two communicators at once,
checked against numpy on every rank. The long one (10,000 ops) and the soak
are tests/fuzz_long.sh."""
import pytest


@pytest.mark.parametrize("nranks,transport,seed", [(2, "shm", 1), (3, "shm", 2), (3, "tcp", 3), (5, "shm", 4)])
def test_fuzz(ranks, nranks, transport, seed):
    proc = ranks(nranks, "fuzz.py", "--ops", "300", "--seed", seed, env={"TEST_TRANSPORT": transport})
    assert f"fuzz ok: 300 ops on {nranks} ranks" in proc.stdout
