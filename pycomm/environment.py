"""What the environment configures: the default timeout (PYCOMM_TIMEOUT),
the native core's expert knobs (PYCOMM_SHM_RING_BYTES and the others), and
the store a communicator made by `Communicator.from_env` meets its peers in.
"""
import atexit
import os
import sys

from .store import store_from_env

DEFAULT_TIMEOUT = 300.0


def env_float(name, default):
    value = os.environ.get(name)
    if not value:
        return default
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, got {value!r}") from None


def check_timeout(timeout):
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, not {type(timeout).__name__}")
    if not timeout > 0:
        raise ValueError(f"timeout must be positive, got {timeout}")
    return float(timeout)


def default_timeout():
    return env_float("PYCOMM_TIMEOUT", DEFAULT_TIMEOUT)


# Expert knobs of the native core, for benchmarking and unusual machines.
TUNING_VARS = {"PYCOMM_SHM_RING_BYTES": "ring_bytes", "PYCOMM_SLICE_BYTES": "slice_bytes",
               "PYCOMM_DIRECT_MAX_BYTES": "direct_max_bytes", "PYCOMM_SPIN_US": "spin_us",
               "PYCOMM_SHM_CMA_BYTES": "shm_cma_bytes", "PYCOMM_SHM_SPLIT": "shm_split",
               "PYCOMM_INT8_PIECE_BYTES": "int8_piece_bytes", "PYCOMM_MPI_CHUNK_BYTES": "mpi_chunk_bytes",
               "PYCOMM_MPI_SLOTS": "mpi_slots", "PYCOMM_MPI_EAGER_BYTES": "mpi_eager_bytes",
               "PYCOMM_MPI_CHANNEL_BYTES": "mpi_channel_bytes", "PYCOMM_FLIGHT_RECORDER": "flight_recorder"}


def tuning():
    """The knobs set in the environment, as the native core's options."""
    opts = {}
    for var, key in TUNING_VARS.items():
        value = os.environ.get(var)
        if value:
            try:
                opts[key] = int(value)
            except ValueError:
                raise ValueError(f"{var} must be an integer, got {value!r}") from None
    return opts


_stores = {}


def store(rank, size, timeout):
    # One store per process and environment: rank 0 serves it on MASTER_PORT,
    # which a second server could not bind. Closed at exit, after which the
    # server lingers until the other ranks hang up.
    dist = sys.modules.get("torch.distributed")
    torch_store = dist is not None and dist.is_available() and dist.is_initialized()
    key = (rank, size, os.environ.get("PYCOMM_STORE"), os.environ.get("MASTER_ADDR"),
           os.environ.get("MASTER_PORT"), torch_store)
    if key not in _stores:
        _stores[key] = s = store_from_env(rank, size, timeout)
        atexit.register(s.close)
    return _stores[key]
