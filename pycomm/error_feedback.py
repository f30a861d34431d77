"""Error feedback for compressed collectives: what int8 rounding left out of
one step is added to the next, so nothing is lost over training, only delayed.

    ef = pycomm.ErrorFeedback()        # one per tensor, owned by the caller
    comm.allreduce(grad, compress="int8", error_feedback=ef)

A compressed allreduce rounds twice, so it keeps two residuals (as 1-bit Adam
keeps worker and server errors): this rank's contribution (the whole tensor;
zero on the slice this rank owns, which enters its sum unrounded) and the
quantized sum of the slice this rank owns. The state allocates on
first use, refuses a tensor or communicator it was not made for, and
round-trips through state_dict / load_state_dict for checkpoints.
"""
import numpy as np

__all__ = ["ErrorFeedback"]


def _host_copy(a):
    if isinstance(a, np.ndarray):
        return a.copy()
    get = getattr(a, "get", None)  # CuPy
    return np.array(a.cpu().numpy() if hasattr(a, "cpu") else get(), dtype=np.float32)


def _like(example, host):
    """`host` (numpy) copied to where `example` (a GPU array) lives."""
    if hasattr(example, "new_tensor"):
        import torch
        return torch.as_tensor(host, device=example.device)
    import cupy
    return cupy.asarray(host)

_LAYOUT_KEYS = ("op", "count", "world_size", "rank", "block_size", "device")


class ErrorFeedback:
    """Residuals of one tensor's compressed allreduce or reduce_scatter."""

    def __init__(self):
        self._layout = None
        self.worker = None  # float32, the input's element count
        self.owner = None   # float32, this rank's slice (allreduce only)

    @property
    def initialized(self):
        return self._layout is not None

    def reset(self):
        """Forget the residuals (the next call starts from zero)."""
        self._layout = None
        self.worker = self.owner = None

    def _buffers(self, layout, owned, zeros=None):
        # Called by Communicator: the residual arrays for this call's layout.
        # zeros(n): a float32 array of n zeros where the tensor lives (GPU
        # tensors keep their residuals on their GPU); numpy by default.
        zeros = zeros or (lambda n: np.zeros(n, dtype=np.float32))
        if self._layout is None:
            self._layout = dict(layout)
            self.worker = zeros(layout["count"])
            self.owner = zeros(owned) if layout["op"] == "allreduce" else None
        elif self._layout != layout:
            diff = ", ".join(f"{k} {self._layout[k]} -> {layout[k]}" for k in _LAYOUT_KEYS
                             if self._layout[k] != layout[k])
            raise ValueError(f"this ErrorFeedback belongs to another tensor or communicator ({diff}): "
                             "use one ErrorFeedback per tensor, or reset() it")
        elif isinstance(self.worker, np.ndarray) and layout["device"] != "cpu":  # restored from a checkpoint
            restore = zeros(0)
            self.worker = _like(restore, self.worker)
            self.owner = None if self.owner is None else _like(restore, self.owner)
        return self.worker, self.owner

    def state_dict(self):
        """A dict of plain values and numpy arrays (host copies, also of GPU
        residuals), for checkpoints."""
        if self._layout is None:
            return {"layout": None}
        return {"layout": dict(self._layout), "worker": _host_copy(self.worker),
                "owner": None if self.owner is None else _host_copy(self.owner)}

    def load_state_dict(self, state):
        """Restore what state_dict returned (the same rank's, for the same tensor)."""
        layout = state.get("layout")
        if layout is None:
            self.reset()
            return
        if set(layout) != set(_LAYOUT_KEYS):
            raise ValueError(f"not an ErrorFeedback state: layout keys {sorted(layout)}")
        worker = np.asarray(state["worker"], dtype=np.float32)
        if worker.shape != (layout["count"],):
            raise ValueError(f"worker residual has shape {worker.shape}, layout says {layout['count']} elements")
        owner = state.get("owner")
        if (owner is None) != (layout["op"] != "allreduce"):
            raise ValueError("owner residual present for reduce_scatter or missing for allreduce")
        self._layout = dict(layout)
        self.worker = worker.copy()
        self.owner = None if owner is None else np.array(owner, dtype=np.float32)
