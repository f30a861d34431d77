"""PYCOMM_DEBUG=WARN|INFO|TRACE, like NCCL_DEBUG: what pycomm decided, on stderr.

INFO: per communicator, its ranks, transport and hosts, and the path its GPU
buffers take once it has had one. TRACE: also every op, with the sequence
number every rank stamps on it (a hang or mismatch reads off these lines).
Read once at import; `configure()` re-reads it.

    pycomm INFO rank 0/2 comm 0: transport shm, 2 ranks on 1 host
"""
import os
import sys

LEVELS = {"WARN": 1, "INFO": 2, "TRACE": 3}
level = 0


def configure(value=None):
    """Sets the level from `value` or $PYCOMM_DEBUG (unknown values: WARN, with a warning)."""
    global level
    value = (os.environ.get("PYCOMM_DEBUG", "") if value is None else value).strip().upper()
    if not value:
        level = 0
    elif value in LEVELS:
        level = LEVELS[value]
    else:
        level = LEVELS["WARN"]
        emit("WARN", None, f"PYCOMM_DEBUG={value!r} is not one of {', '.join(LEVELS)}; using WARN")
    from . import _C
    _C.set_trace_calls(level >= 3)  # traced calls take the Python path (bindings/fast_call.h)


def emit(name, comm, message):
    where = f" rank {comm.rank}/{comm.size} comm {comm.name}:" if comm is not None else ""
    sys.stderr.write(f"pycomm {name}{where} {message}\n")
    sys.stderr.flush()


def info(comm, message):
    if level >= 2:
        emit("INFO", comm, message)


def trace(comm, message):
    if level >= 3:
        emit("TRACE", comm, message)


configure()
