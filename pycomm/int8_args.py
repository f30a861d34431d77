"""The arguments of the int8-compressed collectives (compress="int8"),
checked in one place for every operation that takes them, and the buffers
and error-feedback residuals such a call needs."""
import numpy as np

from .error_feedback import ErrorFeedback
from .ops import op_code


def float32_empty(like, count):
    """A new 1-D float32 buffer of `count` elements, of like's kind (numpy or torch)."""
    if hasattr(like, "new_empty"):
        import torch  # already imported by whoever made `like`
        return like.new_empty((count,), dtype=torch.float32)
    return np.empty(count, dtype=np.float32)


def is_float32(x):
    """Whether x (numpy or torch) holds float32."""
    dtype = getattr(x, "dtype", None)
    return str(dtype if dtype is not None else np.asarray(x).dtype) in ("float32", "torch.float32")


def residuals(ef, layout, owned, call):
    """Runs call(worker, owner) with ef's residuals; a call refused before it
    started leaves a fresh ef unallocated."""
    if ef is None:
        return call(None, None)
    fresh = not ef.initialized
    worker, owner = ef._buffers(layout, owned)
    try:
        return call(worker, owner)
    except (TypeError, ValueError):
        if fresh:
            ef.reset()
        raise


SUM_AVG = {op_code("sum"): "sum", op_code("avg"): "avg"}  # the ops the hierarchical path takes, by code


def gpu_uncompressed(compress):
    """GPU buffers are compressed by allreduce only."""
    if compress is not None:
        raise ValueError("compress='int8' of GPU buffers is available for allreduce only")


def options(compress, block_size, stochastic, seed, error_feedback):
    """Checks compress= and its options (before anything is sent); returns
    (block_size, stochastic, seed) as the native entry takes them."""
    if compress != "int8":
        raise ValueError(f"compress must be None or 'int8', got {compress!r}")
    if isinstance(block_size, bool) or not isinstance(block_size, int):
        raise TypeError(f"block_size must be an int, not {type(block_size).__name__}")
    if error_feedback is not None and not isinstance(error_feedback, ErrorFeedback):
        raise TypeError("error_feedback must be a pycomm.ErrorFeedback, not "
                        f"{type(error_feedback).__name__}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"seed must be an int or None, not {type(seed).__name__}")
    return block_size, bool(stochastic), None if seed is None else seed & 0xFFFFFFFFFFFFFFFF


def uncompressed(block_size, stochastic, seed, error_feedback):
    """Refuses the int8 options on an uncompressed call."""
    if error_feedback is not None or stochastic or seed is not None or block_size != 64:
        raise ValueError("block_size, stochastic, seed and error_feedback need compress='int8'")
