"""Compressed FSDP2 (pycomm.torch.fsdp.compress) on a "pycomm" group.

- Every all-gather the plug-in runs leaves on every rank exactly the int8
  round trip of every rank's input (checked against the inputs gathered
  exactly), bitwise the same on all ranks; every reduce-scatter is the
  average within the int8 error, and not the exact one (it compresses).
- Training an MLP with int8 weights and gradients (error feedback on) ends
  within 3% of the float32 run's loss; without feedback, the gap is printed.
  bf16 parameters with fp32 reduction train too.
- The residuals' state_dict: model, optimizer and compression state restored
  give bitwise the same next step; a fresh compression state does not.
- Bad arguments, and a gloo group, are refused with the reason.
Exit status non-zero on the first failure."""
import copy
import warnings

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed.device_mesh import DeviceMesh

import pycomm
import pycomm.torch  # noqa: F401  registers "pycomm"
from pycomm.torch import fsdp
from torch_fsdp import WIDTH, mlp, sharded_mlp  # the same MLP and sharding as the uncompressed test

warnings.filterwarnings("ignore")
STEPS = 60


def data(rank, step):
    """A learnable target (a fixed map of x), so that the loss falls."""
    g = torch.Generator().manual_seed(1000 * step + rank)
    x = torch.randn(32, WIDTH, generator=g)
    return x, torch.tanh(x @ torch.ones(WIDTH, WIDTH, dtype=x.dtype) / WIDTH + 0.1 * x)


def sharded(mesh, mp=False, **compression):
    model = sharded_mlp(mesh, mp)
    comp = fsdp.compress(model, **compression) if compression else None
    return model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), comp


def step(model, opt, rank, t):
    x, y = data(rank, t)
    loss = nn.functional.mse_loss(model(x).float(), y)
    loss.backward()
    opt.step()
    opt.zero_grad()
    return loss.detach()


def mean_loss(losses):
    """The last 10 steps' loss, averaged over steps and ranks."""
    t = torch.stack(losses[-10:]).mean().reshape(1)
    dist.all_reduce(t)
    return t.item() / dist.get_world_size()


def all_equal(t, group, what):
    got = [torch.empty_like(t) for _ in range(dist.get_world_size(group))]
    dist.all_gather(got, t.contiguous(), group=group)
    for g in got:
        assert torch.equal(g.view(torch.uint8) if g.dtype == torch.bool else g, t), f"{what}: ranks differ"


def check_exact_comms(mesh, exact):
    """Spies on the plug-in's calls while a model trains a few steps."""
    seen = {"ag": 0, "rs": 0}
    rank, n = dist.get_rank(), dist.get_world_size()
    ag_call, rs_call = fsdp.Int8AllGather.__call__, fsdp.Int8ReduceScatter.__call__

    def ag_spy(self, output_tensor, input_tensor, group, async_op=False):
        x = input_tensor.clone()
        w = ag_call(self, output_tensor, input_tensor, group, async_op)
        if w is not None:
            w.wait()
        parts = torch.empty(n * x.numel(), dtype=x.dtype)
        dist.all_gather_into_tensor(parts, x, group=exact)
        want = []
        for p in parts.chunk(n):
            q, s = pycomm.quantize_int8(p.float().numpy(), block_size=self.block_size)
            want.append(torch.from_numpy(pycomm.dequantize_int8(q, s, block_size=self.block_size)))
        want = torch.cat(want).to(x.dtype)
        assert torch.equal(output_tensor, want), "all-gather: not the int8 round trip of every rank's input"
        all_equal(output_tensor, exact, "all-gather output")
        seen["ag"] += 1
        return w

    def rs_spy(self, output_tensor, input_tensor, group, op, async_op=False):
        x = input_tensor.clone()
        w = rs_call(self, output_tensor, input_tensor, group, op, async_op)
        exact_out = torch.empty(output_tensor.numel(), dtype=torch.float64)
        dist.reduce_scatter_tensor(exact_out, x.double(), op=dist.ReduceOp.AVG, group=exact)
        err = (output_tensor.double() - exact_out).norm() / exact_out.norm().clamp_min(1e-30)
        assert 0 < err < 0.05, f"reduce-scatter: relative error {err:.3g} (0: not compressed)"
        seen["rs"] += 1
        return w

    fsdp.Int8AllGather.__call__, fsdp.Int8ReduceScatter.__call__ = ag_spy, rs_spy
    try:
        model, opt, _ = sharded(mesh, weights="int8", grads="int8")
        for t in range(3):
            step(model, opt, rank, t)
    finally:
        fsdp.Int8AllGather.__call__, fsdp.Int8ReduceScatter.__call__ = ag_call, rs_call
    assert seen["ag"] >= 3 * 5 and seen["rs"] >= 3 * 4, f"the plug-in ran {seen}"
    return seen


def check_training(mesh, exact):
    rank = dist.get_rank()
    finals, models = {}, {}
    for name, kw in (("float32", {}), ("int8", {"weights": "int8", "grads": "int8"}),
                     ("int8, no feedback", {"weights": "int8", "grads": "int8", "error_feedback": False}),
                     ("int8 weights", {"weights": "int8", "grads": None}),
                     ("int8 grads", {"weights": None, "grads": "int8"})):
        model, opt, _ = sharded(mesh, **kw)
        losses = [step(model, opt, rank, t) for t in range(STEPS)]
        finals[name], models[name] = mean_loss(losses), model
    base = finals["float32"]
    gap = {k: abs(v - base) / base for k, v in finals.items()}
    assert gap["int8"] <= 0.03, f"int8 with feedback ends {gap['int8']:.2%} off float32 ({finals})"
    first = {k: next(m.parameters()).full_tensor() for k, m in models.items()}
    same = [k for k in first if k != "float32" and torch.equal(first[k], first["float32"])]
    assert not same, f"{same}: the same weights as float32's after training (not compressed)"
    # Every rank computes with the same weights: one input, the same output bytes.
    x = torch.randn(8, WIDTH, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        all_equal(models["int8"](x), exact, "forward output")
    mp_model, mp_opt, _ = sharded(mesh, mp=True, weights="int8", grads="int8")
    mp_losses = [step(mp_model, mp_opt, rank, t) for t in range(STEPS)]
    mp_gap = abs(mean_loss(mp_losses) - base) / base
    assert mp_gap <= 0.05, f"bf16 params / fp32 reduce, int8: {mp_gap:.2%} off float32"
    return finals, gap, mp_gap


def check_state_dict(mesh):
    rank = dist.get_rank()
    model, opt, comp = sharded(mesh, weights="int8", grads="int8")
    for t in range(5):
        step(model, opt, rank, t)
    saved = (copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict()), copy.deepcopy(comp.state_dict()))
    # One per FSDP module; the root holds no parameters of its own, so no residual.
    kept = sorted(k for k, s in saved[2].items() if s["layout"] is not None)
    assert kept == ["0", "2", "4", "6"], f"residuals saved for {kept}"
    step(model, opt, rank, 5)
    after = [p.full_tensor().clone() for p in model.parameters()]

    def redo(restore_comp):
        model.load_state_dict(copy.deepcopy(saved[0]))
        opt.load_state_dict(copy.deepcopy(saved[1]))
        if restore_comp:
            comp.load_state_dict(copy.deepcopy(saved[2]))
        else:
            for _, rs in comp.comms.values():
                rs.feedback.reset()
        step(model, opt, rank, 5)
        return [p.full_tensor() for p in model.parameters()]

    assert all(torch.equal(a, b) for a, b in zip(after, redo(True))), "restored state: another step"
    assert not all(torch.equal(a, b) for a, b in zip(after, redo(False))), "the residuals change nothing"
    try:
        comp.load_state_dict({"no.such.module": {}})
    except ValueError as e:
        assert "no.such.module" in str(e), e
    else:
        raise AssertionError("load_state_dict took an unknown module")


def check_refusals(mesh, gloo_mesh):
    model, _, _ = sharded(mesh)
    for kw, exc, word in (({"weights": "int4"}, ValueError, "weights"),
                          ({"block_size": 48}, ValueError, "power of two"),
                          ({"block_size": 64.0}, TypeError, "block_size")):
        try:
            fsdp.compress(model, **kw)
        except exc as e:
            assert word in str(e), e
        else:
            raise AssertionError(f"compress accepted {kw}")
    try:
        fsdp.compress(mlp())
    except ValueError as e:
        assert "fully_shard" in str(e), e
    else:
        raise AssertionError("compress of a model without FSDP modules")
    g_model, _, _ = sharded(gloo_mesh, weights="int8", grads="int8")
    try:
        g_model(torch.randn(2, WIDTH))
    except TypeError as e:
        assert "pycomm" in str(e), e
    else:
        raise AssertionError("a gloo group ran the compressed all-gather")


def main():
    dist.init_process_group("pycomm")
    torch.set_num_threads(1)
    rank, n = dist.get_rank(), dist.get_world_size()
    mesh = DeviceMesh.from_group(dist.group.WORLD, "cpu", mesh_dim_names=("dp",))
    exact = dist.new_group(backend="pycomm")  # the checks' own, uncompressed collectives
    gloo_mesh = DeviceMesh.from_group(dist.new_group(backend="gloo"), "cpu", mesh_dim_names=("dp",))
    seen = check_exact_comms(mesh, exact)
    finals, gap, mp_gap = check_training(mesh, exact)
    check_state_dict(mesh)
    check_refusals(mesh, gloo_mesh)
    dist.barrier()
    if rank == 0:
        print(f"calls checked {seen}; final loss " + ", ".join(f"{k} {v:.7g} ({gap[k]:.3%})" for k, v in finals.items())
              + f"; bf16 params {mp_gap:.3%}", flush=True)
        print(f"torch fsdp int8 ok on {n} ranks", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
