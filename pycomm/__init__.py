"""pycomm: fast collective communication for Python.

    comm = pycomm.Communicator.from_env()
    comm.allreduce(x)            # in place, sum over ranks
    comm.allreduce(g, op="avg", compress="int8", error_feedback=ef)   # int8 on the wire
"""
from .errors import AbortedError, CommError, MismatchError, PeerLostError, TimeoutError
from . import _C
from .communicator import Communicator
from .error_feedback import ErrorFeedback
from .ops import ReduceOp
from .quantize import dequantize_int8, quantize_int8
from .store import FileStore, Store, TCPStore

Work = _C.Work
__version__ = "0.1.0"

__all__ = [
    "Communicator", "ErrorFeedback", "ReduceOp", "Work", "Store", "TCPStore", "FileStore",
    "CommError", "TimeoutError", "MismatchError", "PeerLostError", "AbortedError",
]
