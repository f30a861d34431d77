"""Compressed FSDP2 communication: int8 weights and int8 gradients on the wire.

    from pycomm.torch import fsdp
    fully_shard(layer, mesh=mesh) ...; fully_shard(model, mesh=mesh)   # on a "pycomm" mesh / group
    comp = fsdp.compress(model, weights="int8", grads="int8")
    ...train...
    torch.save(comp.state_dict(), f"ef-rank{rank}.pt")   # beside the model and optimizer state
    comp.load_state_dict(torch.load(...))

`compress` installs, on every FSDP module of the model, FSDP2's custom
all-gather (`FSDPModule.set_custom_all_gather`) and reduce-scatter
(`set_custom_reduce_scatter`), which run pycomm's compressed collectives on
the module's "pycomm" process group:

- weights="int8": each rank quantizes its shard of the parameters once
  (block-wise int8, one float32 scale per `block_size` elements); every rank
  dequantizes every shard, its own included, from the same bytes, so every
  rank computes with bitwise the same unsharded weights. Each weight is
  rounded once per all-gather; the sharded parameters the optimizer updates
  stay exact. Blocks run over FSDP's flat per-rank input, so a block may
  straddle two parameters (at most one block per parameter boundary).
- grads="int8": the reduce-scatter sends int8 (two-shot: each element rounded
  once), averaged in float32; with `error_feedback` each FSDP parameter
  group keeps the rounding error of its (unsharded, float32) gradient and
  adds it to the next step's, so the error does not accumulate over steps.

Deterministic rounding throughout: the same seed and data give bitwise the
same run. The residuals are per rank: `state_dict()` gives this rank's, keyed
by the FSDP module's name in the model; a checkpoint saves one per rank, as
it does RNG states, and `load_state_dict` restores them into a `compress` of
the same model on the same ranks.

Mixed precision works as for the default comms (bf16 parameters all-gather
bf16; fp32 or bf16 gradients reduce in float32 and come back in their dtype).
An all-gather of mixed-dtype parameters (FSDP then gathers raw bytes) goes
uncompressed. CPU tensors only: a CUDA tensor gets a TypeError.
"""
import torch

import pycomm

from . import communicator
from .tensors import host_view, op_name, premul_factor
from .work import Work

__all__ = ["Compression", "compress", "Int8AllGather", "Int8ReduceScatter"]

try:
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.fsdp._fully_shard._fsdp_api import AllGather, ReduceScatter
except ImportError:  # torch without FSDP2's custom comms: compress() says so
    FSDPModule = None
    AllGather = ReduceScatter = object

COMPRESSED = (torch.float32, torch.float16, torch.bfloat16)


def _host(t, what):
    if t.device.type != "cpu":
        raise TypeError(f"pycomm.torch.fsdp: {what} is on {t.device}; compressed FSDP runs on CPU tensors")
    return host_view(t)


class _Alloc:
    def allocate(self, size, *, dtype, device):
        return torch.empty(*size, dtype=dtype, device=device)


class Int8AllGather(_Alloc, AllGather):
    """FSDP2's all-gather over pycomm's int8 allgather (see the module doc)."""

    def __init__(self, block_size=64):
        self.block_size = block_size

    def __call__(self, output_tensor, input_tensor, group, async_op=False):
        comm = communicator(group)  # a TypeError naming the backend for a group not "pycomm"
        out = _host(output_tensor, "the all-gather output")
        x = _host(input_tensor, "the all-gather input")
        if input_tensor.dtype in COMPRESSED:
            w = comm.allgather(x, out=out, compress="int8", block_size=self.block_size, async_op=async_op)
        else:  # mixed-dtype parameters: FSDP gathers their bytes
            w = comm.allgather(x, out=out, async_op=async_op)
        return group._pending_work(w, [output_tensor]) if async_op else None


class Int8ReduceScatter(_Alloc, ReduceScatter):
    """FSDP2's reduce-scatter over pycomm's int8 reduce_scatter, with an
    ErrorFeedback of the whole input when error_feedback (see the module doc)."""

    def __init__(self, block_size=64, error_feedback=True):
        self.block_size = block_size
        self.feedback = pycomm.ErrorFeedback() if error_feedback else None

    def __call__(self, output_tensor, input_tensor, group, op, async_op=False):
        comm = communicator(group)
        name, factor = op_name(op), premul_factor(op)
        if name not in ("sum", "avg"):
            raise ValueError(f"pycomm.torch.fsdp: a compressed reduce-scatter sums or averages, not {name}")
        x = _host(input_tensor, "the reduce-scatter input")
        out = output_tensor if output_tensor.dtype == torch.float32 else torch.empty(
            output_tensor.shape, dtype=torch.float32)
        comm.reduce_scatter(x, op=name, out=_host(out, "the reduce-scatter output"), compress="int8",
                            block_size=self.block_size, error_feedback=self.feedback)
        if factor is not None:  # PREMUL_SUM: the sum is linear, so scale it once, after
            out.mul_(factor)
        if out is not output_tensor:
            output_tensor.copy_(out)
        return Work([output_tensor]) if async_op else None  # ran to completion (FSDP asks blocking)


class Compression:
    """What `compress` installed: module name -> (all-gather, reduce-scatter)."""

    def __init__(self, comms):
        self.comms = comms

    def state_dict(self):
        """This rank's error-feedback residuals, by FSDP module name."""
        return {name: rs.feedback.state_dict() for name, (_, rs) in self.comms.items()
                if rs is not None and rs.feedback is not None}

    def load_state_dict(self, state):
        unknown = set(state) - {name for name, (_, rs) in self.comms.items() if rs is not None and rs.feedback}
        if unknown:
            raise ValueError(f"pycomm.torch.fsdp: no compressed gradients with feedback for {sorted(unknown)}")
        for name, s in state.items():
            self.comms[name][1].feedback.load_state_dict(s)


def compress(model, weights="int8", grads="int8", block_size=64, error_feedback=True):
    """Installs int8 all-gather (weights) and/or reduce-scatter (grads) on every
    FSDP module of `model` (fully_shard applied, on "pycomm" groups); returns
    the Compression, whose state_dict() carries the residuals."""
    if FSDPModule is None or not hasattr(FSDPModule, "set_custom_all_gather"):
        raise RuntimeError(f"pycomm.torch.fsdp needs FSDP2's custom comms (FSDPModule.set_custom_all_gather), "
                           f"which torch {torch.__version__} lacks")
    for what, v in (("weights", weights), ("grads", grads)):
        if v not in ("int8", None):
            raise ValueError(f"{what} must be 'int8' or None, got {v!r}")
    if isinstance(block_size, bool) or not isinstance(block_size, int):
        raise TypeError(f"block_size must be an int, not {type(block_size).__name__}")
    if block_size < 32 or block_size > 4096 or block_size & (block_size - 1):
        raise ValueError(f"block_size must be a power of two in [32, 4096], got {block_size}")
    comms = {}
    for name, m in model.named_modules():
        if not isinstance(m, FSDPModule):
            continue
        ag = Int8AllGather(block_size) if weights else None
        rs = Int8ReduceScatter(block_size, error_feedback) if grads else None
        if ag is not None:
            m.set_custom_all_gather(ag)
        if rs is not None:
            m.set_custom_reduce_scatter(rs)
        comms[name] = (ag, rs)
    if not comms:
        raise ValueError("pycomm.torch.fsdp.compress: the model has no FSDP module (apply fully_shard first)")
    return Compression(comms)
