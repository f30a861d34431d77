"""pycomm: fast collective communication for Python.

    comm = pycomm.Communicator.from_env()
    comm.allreduce(x)            # in place, sum over ranks
    comm.allreduce(g, op="avg", compress="int8", error_feedback=ef)   # int8 on the wire
"""
from .errors import AbortedError, CommError, MismatchError, PeerLostError, TimeoutError
try:
    from . import _C
except ImportError as e:  # the source folder imported instead of the built package
    import os as _os

    _here = _os.path.dirname(_os.path.abspath(__file__))
    if _os.path.isfile(_os.path.join(_os.path.dirname(_here), "setup.py")):
        raise ImportError(
            f"pycomm: {_here} is pycomm's source folder and its native core _C is not built there ({e}). "
            "Python imports it because the current directory comes first on sys.path. Install in place "
            "with `pip install -e .` (builds _C into this folder), or run from another directory.") from e
    raise
from .communicator import Communicator
from .error_feedback import ErrorFeedback
from .ops import ReduceOp
from .quantize import dequantize_int8, quantize_int8
from .store import FileStore, Store, TCPStore

Work = _C.Work
Memory = _C.Memory  # host memory by address (csrc/bindings/memory.h)
__version__ = "0.1.0"

__all__ = [
    "Communicator", "ErrorFeedback", "Memory", "ReduceOp", "Work", "Store", "TCPStore", "FileStore",
    "CommError", "TimeoutError", "MismatchError", "PeerLostError", "AbortedError",
]
