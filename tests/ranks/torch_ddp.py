"""DDP over the "pycomm" backend: the same training run from the same seed
through pycomm and through gloo (both groups in this process), then with
pycomm's int8 / bf16 comm hooks.

DDP_DEVICE=cuda runs it all on GPU 0 (every rank on the one GPU: pycomm's
CUDA IPC path, its GPU int8 allreduce under int8_hook; gloo stages through
the host).

Checks: pycomm's parameters are bitwise identical on every rank and equal
gloo's within float32 tolerance; int8_hook with error feedback ends within 1%
of the float32 run's final loss; bf16_hook trains too.

PYCOMM_TORCH_OVERLAP=1: every bucket's allreduce runs on pycomm's worker
thread while the backward pass goes on (however small the bucket).
"""
import gc
import hashlib
import os
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import pycomm.torch  # noqa: F401  registers "pycomm"
from pycomm.torch import completion, hooks

STEPS = int(os.environ.get("DDP_STEPS", "150"))
DEVICE = os.environ.get("DDP_DEVICE", "cpu")
if os.environ.get("PYCOMM_TORCH_OVERLAP") == "1":
    completion.OVERLAP_MIN_BYTES = 0


def model_and_data(rank):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64),
                                torch.nn.Tanh(), torch.nn.Linear(64, 1))
    teacher = torch.nn.Sequential(torch.nn.Linear(32, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    g = torch.Generator().manual_seed(1000 + rank)  # each rank its own shard
    x = torch.randn(STEPS, 64, 32, generator=g)
    with torch.no_grad():
        y = teacher(x)
    return model.to(DEVICE), x.to(DEVICE), y.to(DEVICE)


def train(group, hook=None, state=None, bucket_cap_mb=None):
    rank = dist.get_rank()
    model, x, y = model_and_data(rank)
    kw = {} if bucket_cap_mb is None else {"bucket_cap_mb": bucket_cap_mb}
    if DEVICE == "cuda":
        kw["device_ids"] = [torch.cuda.current_device()]
    ddp = DDP(model, process_group=group, **kw)
    if hook is not None:
        ddp.register_comm_hook(state, hook)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for i in range(STEPS):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(ddp(x[i]), y[i])
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # The mean loss of the last steps over all ranks (through gloo: the judge is not the judged).
    tail = torch.tensor([sum(losses[-20:]) / 20])
    dist.all_reduce(tail, group=GLOO)
    params = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).cpu()
    return params, tail.item() / dist.get_world_size()


def same_on_all_ranks(params, what):
    digest = torch.tensor(list(hashlib.sha256(params.numpy().tobytes()).digest()), dtype=torch.uint8)
    all_digests = [torch.empty_like(digest) for _ in range(dist.get_world_size())]
    dist.all_gather(all_digests, digest, group=GLOO)
    assert all(torch.equal(d, all_digests[0]) for d in all_digests), f"{what}: ranks differ"


def main():
    global GLOO
    if DEVICE == "cuda":
        torch.cuda.set_device(0)
    dist.init_process_group("pycomm")
    GLOO = dist.new_group(backend="gloo")
    world = dist.group.WORLD
    rank = dist.get_rank()

    p_pycomm, loss_pycomm = train(world)
    p_gloo, loss_gloo = train(GLOO)
    same_on_all_ranks(p_pycomm, "pycomm DDP")
    diff = (p_pycomm - p_gloo).abs().max().item()
    assert torch.allclose(p_pycomm, p_gloo, rtol=1e-4, atol=1e-5), f"pycomm vs gloo: max diff {diff}"

    # Small buckets: several per step, rebuilt after step 1 (residuals carried over).
    state = hooks.Int8State()
    p_int8, loss_int8 = train(world, hooks.int8_hook, state, bucket_cap_mb=0.01)
    same_on_all_ranks(p_int8, "int8_hook DDP")
    rel = abs(loss_int8 - loss_pycomm) / loss_pycomm
    p_bf16, loss_bf16 = train(world, hooks.bf16_hook, None)
    same_on_all_ranks(p_bf16, "bf16_hook DDP")
    if rank == 0:
        print(f"steps {STEPS}: final loss float32 pycomm {loss_pycomm:.7g}, gloo {loss_gloo:.7g} "
              f"(max param diff {diff:.2e}); int8_hook {loss_int8:.7g} ({100 * rel:.4f}% off); "
              f"bf16_hook {loss_bf16:.7g}; {len(state._feedback)} residual buckets", flush=True)
    assert rel < 0.01, f"int8_hook final loss {loss_int8} is {100 * rel:.2f}% off float32's {loss_pycomm}"
    assert abs(loss_bf16 - loss_pycomm) / loss_pycomm < 0.05, (loss_bf16, loss_pycomm)
    # Free the DDP models (reference cycles) while the groups still exist:
    # otherwise gloo's worker threads drop the last references to tensors
    # during interpreter finalization and abort the process (a torch/gloo
    # shutdown race seen here about one run in five; pycomm is not involved).
    gc.collect()
    dist.destroy_process_group()
    gc.collect()
    if rank == 0:
        print("ddp ok")


if __name__ == "__main__":
    sys.exit(main())
