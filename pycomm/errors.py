"""pycomm's exceptions. Every communication failure derives from CommError.

The native core raises these same classes (they are registered with the
extension at import), so `except pycomm.CommError` catches everything the data
path can report.
"""
import builtins


class CommError(RuntimeError):
    """A collective could not complete. The message names the rank(s) at fault."""


class TimeoutError(CommError, builtins.TimeoutError):
    """A wait passed its deadline (the op's `timeout`, default PYCOMM_TIMEOUT)."""


class MismatchError(CommError):
    """Ranks called different collectives (op, dtype, count or root) at the same sequence number."""


class PeerLostError(CommError):
    """A peer process died or its connection broke."""


class AbortedError(CommError):
    """The communicator was aborted (by `abort()` here or by a peer's failure)."""


__all__ = ["CommError", "TimeoutError", "MismatchError", "PeerLostError", "AbortedError"]
