"""FSDP2 (fully_shard) over "pycomm" against the same run over "gloo", in
one job with the same seeds: a 4-layer MLP, 20 steps, float32 and
MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32); losses and final
parameters equal within float32 reduction-order tolerance; the sharded
state_dict saved and loaded back. With 4 ranks also HSDP on a (2, 2) mesh.
argv[1:]: scenarios (default all that fit the world size)."""
import copy
import sys
import warnings

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor

import pycomm.torch  # noqa: F401  registers "pycomm"

warnings.filterwarnings("ignore")
STEPS = 20
WIDTH = 64


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(*[m for _ in range(4) for m in (nn.Linear(WIDTH, WIDTH), nn.ReLU())])


def data(rank, step):
    g = torch.Generator().manual_seed(1000 * step + rank)
    return torch.randn(16, WIDTH, generator=g), torch.randn(16, WIDTH, generator=g)


def sharded_mlp(mesh, mp):
    """mlp() with each Linear and the root fully_shard'ed on `mesh` (mp: bf16
    parameters, fp32 reduction)."""
    model = mlp()
    kw = {"mesh": mesh}
    if mp:
        kw["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for layer in model:
        if isinstance(layer, nn.Linear):
            fully_shard(layer, **kw)
    fully_shard(model, **kw)
    return model


def train(mesh, mp):
    """(losses, full parameters) of STEPS steps of FSDP2 on `mesh`."""
    model = sharded_mlp(mesh, mp)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    rank = dist.get_rank()
    losses = []
    for step in range(STEPS):
        x, y = data(rank, step)
        loss = nn.functional.mse_loss(model(x).float(), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.detach())
    full = [p.full_tensor().detach().clone() for p in model.parameters()]
    return torch.stack(losses), full, model


def close(a, b, what, rtol=1e-5, atol=1e-6):
    assert torch.allclose(a, b, rtol=rtol, atol=atol), f"{what}: differ by {(a - b).abs().max():.3g}"


def fsdp(r, n):
    for mp in (False, True):
        results = {}
        for backend in ("gloo", "pycomm"):
            mesh = init_device_mesh("cpu", (n,), mesh_dim_names=("dp",), backend_override={"dp": backend}) \
                if _has_override() else _mesh(backend, n)
            assert isinstance(mesh.get_group(), pycomm.torch.ProcessGroupPycomm) == (backend == "pycomm")
            results[backend] = train(mesh, mp)
        (lg, pg, _), (lp, pp, model) = results["gloo"], results["pycomm"]
        tol = dict(rtol=2e-2, atol=2e-3) if mp else {}
        close(lp, lg, f"losses (mp={mp})", **tol)
        for a, b in zip(pp, pg):
            close(a, b, f"parameters (mp={mp})", **tol)
        if not mp:
            state_dict_round_trip(model)
        if r == 0:
            print(f"fsdp mp={mp} ok: final loss pycomm {lp[-1]:.6f} gloo {lg[-1]:.6f}", flush=True)


def state_dict_round_trip(model):
    """The full state_dict of the trained model, loaded into a fresh sharded
    one (other seed), gives back the same tensors."""
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                         set_model_state_dict)
    full = StateDictOptions(full_state_dict=True)
    sd = {k: _full(v) for k, v in get_model_state_dict(model, options=full).items()}
    fresh = mlp(seed=123)
    mesh = next(p for p in model.parameters()).device_mesh
    for layer in fresh:
        if isinstance(layer, nn.Linear):
            fully_shard(layer, mesh=mesh)
    fully_shard(fresh, mesh=mesh)
    set_model_state_dict(fresh, {k: v.clone() for k, v in sd.items()}, options=full)  # it rewrites the dict
    back = {k: _full(v) for k, v in get_model_state_dict(fresh, options=full).items()}
    assert sd.keys() == back.keys()
    for k in sd:
        assert torch.equal(back[k], sd[k]), f"state_dict {k} differs after loading"


def _full(v):
    """A plain tensor of v's whole value (a Parameter may wrap a DTensor)."""
    v = v.data if isinstance(v, nn.Parameter) else v
    return v.full_tensor() if isinstance(v, DTensor) else v


def _has_override():
    import inspect
    return "backend_override" in inspect.signature(init_device_mesh).parameters


def _mesh(backend, n):
    from torch.distributed.device_mesh import DeviceMesh
    return DeviceMesh.from_group(dist.new_group(backend=backend), "cpu", mesh_dim_names=("dp",))


def hsdp(r, n):
    """HSDP: shard inside pairs, replicate across them (a (2, 2) mesh)."""
    results = {}
    for backend in ("gloo", "pycomm"):
        mesh = init_device_mesh("cpu", (2, n // 2), mesh_dim_names=("replicate", "shard"),
                                backend_override={"replicate": backend, "shard": backend})
        for dim in ("replicate", "shard"):
            assert isinstance(mesh.get_group(dim), pycomm.torch.ProcessGroupPycomm) == (backend == "pycomm")
        results[backend] = train(mesh, False)
    (lg, pg, _), (lp, pp, _) = results["gloo"], results["pycomm"]
    close(lp, lg, "hsdp losses")
    for a, b in zip(pp, pg):
        close(a, b, "hsdp parameters")
    if r == 0:
        print(f"hsdp ok: final loss pycomm {lp[-1]:.6f} gloo {lg[-1]:.6f}", flush=True)


def main():
    dist.init_process_group("gloo")
    r, n = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)
    names = sys.argv[1:] or (["fsdp", "hsdp"] if n == 4 else ["fsdp"])
    for name in names:
        globals()[name](r, n)
    dist.barrier()
    dist.destroy_process_group()
    if r == 0:
        print(f"torch fsdp ok on {n} ranks: {' '.join(names)}", flush=True)


if __name__ == "__main__":
    main()
