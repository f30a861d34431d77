"""DDP communication hooks over pycomm's compressed allreduce.

    from pycomm.torch import hooks
    ddp.register_comm_hook(hooks.Int8State(), hooks.int8_hook)    # int8 + error feedback
    ddp.register_comm_hook(None, hooks.bf16_hook)                  # or fp16_hook; state: a group or None

int8_hook hands each gradient bucket to pycomm's int8 allreduce (block-wise
int8 on the wire, every element rounded at most twice whatever the world
size, bitwise the same result on every rank), averaged. With error feedback
each bucket keeps a pycomm.ErrorFeedback; residuals are keyed by the
bucket's parameters, and when DDP rebuilds its buckets (after the first step)
each parameter's residual is carried into the new bucket that holds it.

bf16_hook / fp16_hook cast the bucket to half precision, allreduce that
(pycomm combines half types in float32, rounding once per step) and cast back.

`process_group=None` means the default group (as in torch's built-in hooks):
pass the group explicitly when DDP runs on a subgroup. The group must be a
"pycomm" one. Where the group overlaps its large all_reduces with the caller
(PYCOMM_TORCH_OVERLAP), the hooks' allreduces overlap the backward pass too:
they return a future that the group's completion thread sets.
"""
import torch
import torch.distributed as dist

import pycomm
from pycomm.errors import CommError

from .process_group import ProcessGroupPycomm

__all__ = ["Int8State", "int8_hook", "bf16_hook", "fp16_hook"]


def _group(group):
    if group is None:
        group = dist.distributed_c10d._get_default_group()
    if not isinstance(group, ProcessGroupPycomm):
        raise TypeError(f"pycomm hooks need a 'pycomm' process group, got {type(group).__name__} "
                        "(init_process_group('pycomm') or pass process_group=...)")
    return group


def _done(value=None, error=None):
    fut = torch.futures.Future()
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(value)
    return fut


class Int8State:
    """State of int8_hook: the group, the block size and the error-feedback residuals."""

    def __init__(self, process_group=None, block_size=64, error_feedback=True):
        self.process_group = process_group
        self.block_size = block_size
        self.error_feedback = error_feedback
        self._feedback = {}   # bucket key (its parameters' ids) -> pycomm.ErrorFeedback
        self._offsets = {}    # bucket key -> [(param id, offset, numel)]
        self._home = {}       # param id -> the bucket key holding its residual

    def _residual_for(self, bucket, buf):
        """The bucket's ErrorFeedback, and the residual to fold into this call's
        input when the bucket is new but its parameters had residuals elsewhere."""
        params = bucket.parameters()
        key = tuple(id(p) for p in params)
        ef = self._feedback.get(key)
        if ef is not None:
            return ef, None
        ef = self._feedback[key] = pycomm.ErrorFeedback()
        layout, offset = [], 0
        for pid, p in zip(key, params):
            layout.append((pid, offset, p.numel()))
            offset += p.numel()
        if offset != buf.numel():  # unexpected bucket layout: start this bucket from zero
            layout = []
        carried = None
        for pid, start, n in layout:
            old = self._home.get(pid)
            if old is not None and old != key:
                src = next(((o, k) for p2, o, k in self._offsets[old] if p2 == pid), None)
                old_ef = self._feedback[old]
                if src is not None and old_ef.initialized and src[1] == n:
                    if carried is None:
                        carried = torch.zeros(buf.numel(), dtype=torch.float32, device=buf.device)
                    # Residuals are numpy arrays for CPU buckets, tensors on the GPU for CUDA ones.
                    carried[start:start + n] = torch.as_tensor(old_ef.worker[src[0]:src[0] + n],
                                                               device=buf.device)
            self._home[pid] = key
        self._offsets[key] = layout
        # Buckets no parameter lives in any more are dropped.
        live = set(self._home.values())
        for old in [k for k in self._feedback if k not in live]:
            del self._feedback[old], self._offsets[old]
        return ef, carried


def int8_hook(state, bucket):
    """Averages the bucket with pycomm's int8 allreduce (see the module doc)."""
    buf = bucket.buffer()
    try:
        group = _group(state.process_group)
        comm = group.comm
        ef, carried = state._residual_for(bucket, buf) if state.error_feedback else (None, None)
        x = buf
        if carried is not None:
            x = buf.float() + carried if buf.dtype != torch.float32 else buf.add_(carried)
        if x.dtype == torch.float32:
            overlap = group._overlapped(x.numel() * 4)  # on pycomm's worker thread, as the group's all_reduce
            w = comm.allreduce(x, op="avg", compress="int8", block_size=state.block_size, error_feedback=ef,
                               async_op=overlap)
            then = None if x is buf else (lambda: buf.copy_(x))
            if overlap:
                return group._future(w, buf, then)
            if then is not None:
                then()
        else:
            out = comm.allreduce(x, op="avg", compress="int8", block_size=state.block_size, error_feedback=ef)
            buf.copy_(out)
    except CommError as e:
        return _done(error=e)
    return _done(buf)


def _half_hook(dtype):
    def hook(state, bucket):
        buf = bucket.buffer()
        try:
            group = _group(getattr(state, "process_group", state))
            half = buf.to(dtype)
            overlap = group._overlapped(half.numel() * half.element_size())
            w = group.comm.allreduce(half, op="avg", async_op=overlap)
            if overlap:
                return group._future(w, buf, lambda: buf.copy_(half))
            buf.copy_(half)
        except CommError as e:
            return _done(error=e)
        return _done(buf)
    return hook


bf16_hook = _half_hook(torch.bfloat16)
bf16_hook.__name__ = bf16_hook.__qualname__ = "bf16_hook"
bf16_hook.__doc__ = "Averages the bucket in bfloat16 (state: a pycomm group, an object with .process_group, or None)."
fp16_hook = _half_hook(torch.float16)
fp16_hook.__name__ = fp16_hook.__qualname__ = "fp16_hook"
fp16_hook.__doc__ = "Averages the bucket in float16 (state: a pycomm group, an object with .process_group, or None)."
