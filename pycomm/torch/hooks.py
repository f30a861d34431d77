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
import numpy as np
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
    """State of int8_hook: the group, the block size and the error-feedback residuals.

    Checkpoints: give the model (`Int8State(model=ddp)`) and save
    `state.state_dict()` with each rank's checkpoint (the residuals are that
    rank's); `load_state_dict` before the next step. Residuals are keyed by
    parameter names: a bucket of the same parameters on the same world size
    gets its residuals back bitwise; where DDP builds other buckets (or the
    world size changed) each parameter's own residual is carried and the
    rank's slice of the sum starts from zero, as after DDP's bucket rebuild.
    """

    def __init__(self, process_group=None, block_size=64, error_feedback=True, model=None):
        self.process_group = process_group
        self.block_size = block_size
        self.error_feedback = error_feedback
        self.model = model
        self._feedback = {}   # bucket key (its parameters' ids) -> pycomm.ErrorFeedback
        self._offsets = {}    # bucket key -> [(param id, offset, numel)]
        self._home = {}       # param id -> the bucket key holding its residual
        self._order = {}      # bucket key -> ([(offset, numel)], param ids) in travel order, where not as they lie
        self._restored = {}   # parameter names -> a bucket's entry of a loaded state_dict

    def _param_names(self):
        if self.model is None:
            raise ValueError("Int8State needs the model to checkpoint its residuals "
                             "(Int8State(model=ddp)): they are keyed by parameter names")
        module = self.model
        if isinstance(module, torch.nn.parallel.DistributedDataParallel):
            module = module.module
        return {id(p): name for name, p in module.named_parameters()}

    def state_dict(self):
        """This rank's residuals, by bucket, as plain values and numpy arrays."""
        names = self._param_names()
        buckets = []
        for key, ef in self._feedback.items():
            if ef.initialized:
                numel = {pid: n for pid, _, n in self._offsets[key]}
                # The parameters in the order the residuals hold them (a restored bucket's travel order).
                pids = self._order[key][1] if key in self._order else [pid for pid, _, _ in self._offsets[key]]
                buckets.append({"params": [names[pid] for pid in pids], "numels": [numel[pid] for pid in pids],
                                "feedback": ef.state_dict()})
        buckets += self._restored.values()  # loaded, not yet taken up by a bucket
        return {"block_size": self.block_size, "error_feedback": self.error_feedback, "buckets": buckets}

    def load_state_dict(self, state):
        """Restore what state_dict returned on this rank; the buckets pick
        their residuals up on their next call."""
        if state.get("block_size") != self.block_size:
            raise ValueError(f"the checkpoint's int8 block size is {state.get('block_size')}, "
                             f"this state's {self.block_size}")
        self._feedback.clear()
        self._offsets.clear()
        self._home.clear()
        self._order.clear()
        self._restored = {tuple(b["params"]): b for b in state.get("buckets", ())}

    def _residual_for(self, bucket, buf, comm):
        """The bucket's ErrorFeedback; the residual to fold into this call's
        input when the bucket is new but its parameters had residuals
        elsewhere; and the order its segments travel in (None: as they lie)."""
        params = bucket.parameters()
        key = tuple(id(p) for p in params)
        ef = self._feedback.get(key)
        if ef is not None:
            return ef, None, self._segments(key)
        ef = self._feedback[key] = pycomm.ErrorFeedback()
        layout, offset = [], 0
        for pid, p in zip(key, params):
            layout.append((pid, offset, p.numel()))
            offset += p.numel()
        if offset != buf.numel():  # unexpected bucket layout: start this bucket from zero
            layout = []
        self._offsets[key] = layout
        sources, order = self._sources(layout, ef, comm)
        if order is not None:
            self._order[key] = order
        carried = None
        for (pid, start, n), src in zip(layout, sources):
            if src is not None:
                if carried is None:
                    carried = torch.zeros(buf.numel(), dtype=torch.float32, device=buf.device)
                # Residuals are numpy arrays for CPU buckets, tensors on the GPU for CUDA ones.
                carried[start:start + n] = torch.as_tensor(src, device=buf.device)
            self._home[pid] = key
        # Buckets no parameter lives in any more are dropped.
        live = set(self._home.values())
        for old in [k for k in self._feedback if k not in live]:
            del self._feedback[old], self._offsets[old]
            self._order.pop(old, None)
        return ef, carried, self._segments(key)

    def _segments(self, key):
        travel = self._order.get(key)
        return None if travel is None else travel[0]

    def _sources(self, layout, ef, comm):
        """Per parameter of a new bucket, the worker residual to carry into it
        (or None): the parameter's residual in its previous bucket (DDP
        rebuilt its buckets), else in a loaded state_dict. Where a loaded
        bucket holds the same parameters, `ef` gets its residuals whole
        instead, and the order (offset, numel) in which the new bucket's
        segments must travel to lie as they did when it was saved, with
        their parameters' ids in that order."""
        pids = tuple(pid for pid, _, _ in layout)
        for old, (_, travel) in list(self._order.items()):
            # DDP rebuilt a restored bucket in the order it has been travelling in.
            if travel == pids and self._feedback[old].initialized:
                ef.load_state_dict(self._feedback[old].state_dict())
                return [None] * len(layout), None
        sources = []
        for pid, _, n in layout:
            old, src = self._home.get(pid), None
            if old is not None:
                at = next(((o, k) for p2, o, k in self._offsets[old] if p2 == pid), None)
                if at is not None and self._feedback[old].initialized and at[1] == n:
                    src = self._feedback[old].worker[at[0]:at[0] + n]
            sources.append(src)
        if not self._restored:
            return sources, None
        names = self._param_names()
        key = tuple(names.get(pid) for pid, _, _ in layout)
        where = {name: (start, n) for name, (_, start, n) in zip(key, layout)}
        for b_key, b in self._restored.items():
            saved = b["feedback"]["layout"]
            if (saved and set(b_key) == set(key) and len(b_key) == len(key)
                    and all(where[name][1] == n for name, n in zip(b_key, b["numels"]))
                    and (saved["world_size"], saved["rank"]) == (comm.size, comm.rank)):
                del self._restored[b_key]
                ef.load_state_dict(b["feedback"])
                if b_key == key:
                    return [None] * len(layout), None
                ids = {name: pid for name, pid in zip(key, pids)}
                return [None] * len(layout), ([where[name] for name in b_key], tuple(ids[name] for name in b_key))
        for i, (name, (_, _, n)) in enumerate(zip(key, layout)):
            for b_key, b in self._restored.items():
                if sources[i] is None and name in b_key and b["feedback"]["layout"]:
                    at = b_key.index(name)
                    if b["numels"][at] == n:
                        o = sum(b["numels"][:at])
                        sources[i] = np.asarray(b["feedback"]["worker"][o:o + n])
        # A loaded bucket is done with once all its parameters have new buckets.
        homed = set(key) | {names.get(pid) for pid in self._home}
        self._restored = {k: b for k, b in self._restored.items() if not set(k) <= homed}
        return sources, None


def int8_hook(state, bucket):
    """Averages the bucket with pycomm's int8 allreduce (see the module doc)."""
    buf = bucket.buffer()
    try:
        group = _group(state.process_group)
        comm = group.comm
        ef, carried, order = (state._residual_for(bucket, buf, comm) if state.error_feedback
                              else (None, None, None))
        # A bucket restored from a checkpoint travels in the saved order, so
        # its blocks and residuals line up as they did before the restart.
        x = buf if order is None else torch.cat([buf[o:o + n] for o, n in order])
        if carried is not None:
            x = x.float() + carried if x.dtype != torch.float32 else x.add_(carried)

        def back(result):
            if order is None:
                buf.copy_(result)
                return
            at = 0
            for o, n in order:
                buf[o:o + n].copy_(result[at:at + n])
                at += n

        if x.dtype == torch.float32:
            overlap = group._overlapped(x.numel() * 4)  # on pycomm's worker thread, as the group's all_reduce
            w = comm.allreduce(x, op="avg", compress="int8", block_size=state.block_size, error_feedback=ef,
                               async_op=overlap)
            then = None if x is buf else (lambda: back(x))
            if overlap:
                return group._future(w, buf, then)
            if then is not None:
                then()
        else:
            back(comm.allreduce(x, op="avg", compress="int8", block_size=state.block_size, error_feedback=ef))
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
