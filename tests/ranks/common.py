"""Helpers shared by the per-rank test programs: seeded inputs every rank can
regenerate, float64 references, and a cross-rank bitwise identity check."""
import hashlib
import os
import sys

import numpy as np

import pycomm

DTYPES = ["float32", "float64", "float16", "int8", "uint8", "int32", "int64"]
FLOATS = {"float32", "float64", "float16", "bfloat16"}
TOL = {"float64": 1e-12, "float32": 1e-5, "float16": 2e-3, "bfloat16": 1.6e-2}


def comm_from_env(**kw):
    return pycomm.Communicator.from_env(transport=os.environ.get("TEST_TRANSPORT") or None, **kw)


def make_input(seed, rank, count, dtype, op):
    """Rank `rank`'s input: the same numbers wherever it is generated."""
    rng = np.random.default_rng([seed, rank, count])
    if dtype in FLOATS:
        if op == "prod":
            v = rng.uniform(0.5, 1.5, count)
        else:
            v = rng.uniform(-1, 1, count)
        return v.astype(np.float32 if dtype == "bfloat16" else dtype)
    info = np.iinfo(dtype)
    lo, hi = (max(info.min, -3), min(info.max, 3)) if op == "prod" else (max(info.min, -100), min(info.max, 100))
    return rng.integers(lo, hi + 1, count).astype(dtype)


def reference(inputs, op, dtype):
    """Float64 (or wrapping integer) reduction of all ranks' inputs."""
    if dtype in FLOATS:
        stack = np.stack([x.astype(np.float64) for x in inputs])
    else:
        stack = np.stack([x.astype(np.int64) for x in inputs])
    if op in ("sum", "avg"):
        r = stack.sum(axis=0)
        if op == "avg":
            r = r / len(inputs)
    elif op == "prod":
        r = stack.prod(axis=0)
    elif op == "min":
        r = stack.min(axis=0)
    else:
        r = stack.max(axis=0)
    return r


def check_close(got, ref, dtype, what):
    if dtype in FLOATS:
        got64 = np.asarray(got, dtype=np.float64)
        scale = np.maximum(np.abs(ref), 1.0)
        bad = np.abs(got64 - ref) > TOL[dtype] * scale * 4
    else:
        bad = np.asarray(got) != ref.astype(dtype)  # integer ops wrap, like numpy
    nbad = int(np.count_nonzero(bad))
    if nbad:
        i = int(np.flatnonzero(bad)[0])
        raise AssertionError(f"{what}: {nbad} wrong elements, first at {i}: got {got[i]!r}, want {ref[i]!r}")


def check_identical(comm, arr, what):
    """All ranks hold bitwise identical bytes (compared through the store, not pycomm)."""
    digest = hashlib.sha256(np.ascontiguousarray(arr).view(np.uint8).tobytes()).hexdigest().encode()
    key = f"identical/{what}"
    all_digests = comm.store.allgather(key, comm.rank, comm.size, digest, 60)
    if len(set(all_digests)) != 1:
        raise AssertionError(f"{what}: ranks differ bitwise: {[d[:8] for d in all_digests]}")


def expect(exc_type, fn, *must_mention):
    """fn() raises exc_type, whose message mentions each of must_mention; returns it."""
    try:
        fn()
    except exc_type as e:
        for word in must_mention:
            assert word in str(e), f"{exc_type.__name__} does not mention {word!r}: {e}"
        return e
    raise AssertionError(f"expected {exc_type.__name__} mentioning {must_mention}")


def log(comm, *args):
    if comm.rank == 0:
        print(*args, flush=True)
        sys.stdout.flush()
