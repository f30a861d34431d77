"""FSDP2 training-step time over "pycomm" and "gloo" in the same job: a
4-layer MLP (25M parameters at the default width), each Linear and the root
fully_shard'ed, SGD; rounds alternate between the two groups. Also each
rank's compute alone (the same model unsharded, forward and backward, no
communication), which bounds any backend's step.

    python -m pycomm.launch -n 2 bench/fsdp_step.py [--width 2500] [--steps 5] [--mp]
"""
import argparse
import statistics
import time
import warnings

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

import pycomm.torch  # noqa: F401  registers "pycomm"

warnings.filterwarnings("ignore")


def mlp(width, layers):
    torch.manual_seed(0)
    return nn.Sequential(*[m for _ in range(layers) for m in (nn.Linear(width, width), nn.ReLU())])


def sharded(width, layers, group, mp):
    model = mlp(width, layers)
    kw = {"mesh": DeviceMesh.from_group(group, "cpu")}
    if mp:
        kw["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for m in model:
        if isinstance(m, nn.Linear):
            fully_shard(m, **kw)
    fully_shard(model, **kw)
    return model, torch.optim.SGD(model.parameters(), lr=1e-3)


def step(model, opt, x, y):
    loss = nn.functional.mse_loss(model(x).float(), y)
    loss.backward()
    opt.step()
    opt.zero_grad()
    return loss.item()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=2500)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--batch", type=int, default=32, help="rows per rank")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--mp", action="store_true", help="bf16 parameters, fp32 gradient reduction")
    a = ap.parse_args()
    # The world (barriers, the timing reductions) is pycomm's, as in ddp_step.py: a
    # gloo worker thread lets its last op's tensors go after the op completes,
    # and one still doing so as Python exits is std::terminate (torch's
    # gil_scoped_acquire in a thread CPython ends at exit).
    dist.init_process_group("pycomm")
    r, n = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)
    groups = {"gloo": dist.new_group(backend="gloo"), "pycomm": dist.group.WORLD}
    g = torch.Generator().manual_seed(r)
    x, y = torch.randn(a.batch, a.width, generator=g), torch.randn(a.batch, a.width, generator=g)
    runs = {name: sharded(a.width, a.layers, grp, a.mp) for name, grp in groups.items()}
    times = {name: [] for name in groups}
    losses = {}
    for name, (model, opt) in runs.items():
        step(model, opt, x, y)  # warm-up
    for _ in range(a.rounds):
        for name, (model, opt) in runs.items():
            dist.barrier()
            for _ in range(a.steps):
                t0 = time.perf_counter()
                losses[name] = step(model, opt, x, y)
                times[name].append(time.perf_counter() - t0)
    # Compute alone: the same layers unsharded on this rank's batch.
    ref = mlp(a.width, a.layers)
    if a.mp:
        ref = ref.to(torch.bfloat16)
    xs = x.to(next(ref.parameters()).dtype)
    ct = []
    for _ in range(3):
        t0 = time.perf_counter()
        nn.functional.mse_loss(ref(xs).float(), y).backward()
        ct.append(time.perf_counter() - t0)
    med = {}
    for name, ts in times.items():
        t = torch.tensor(ts, dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        med[name] = statistics.median(t.tolist())
    c = torch.tensor([statistics.median(ct)], dtype=torch.float64)
    dist.all_reduce(c, op=dist.ReduceOp.MAX)
    params = sum(p.numel() for p in ref.parameters())
    if r == 0:
        print(f"# fsdp_step: FSDP2, {n} ranks, MLP {a.layers} x {a.width} ({params / 1e6:.1f}M parameters), "
              f"batch {a.batch} per rank, {'bf16 params / fp32 reduce' if a.mp else 'fp32'}, torch {torch.__version__}")
        print(f"# step time: median of {a.rounds} x {a.steps} steps, the slowest rank's; "
              f"compute: the busiest rank's unsharded forward+backward alone")
        extra = {k: max(v - c.item(), 1e-9) for k, v in med.items()}
        print(f"{'':8}{'step':>9}    {'step - compute':>14}   last loss")
        print(f"gloo    {med['gloo'] * 1e3:9.1f} ms {extra['gloo'] * 1e3:11.1f} ms   {losses['gloo']:.6f}")
        print(f"pycomm  {med['pycomm'] * 1e3:9.1f} ms {extra['pycomm'] * 1e3:11.1f} ms   {losses['pycomm']:.6f}   "
              f"step {med['gloo'] / med['pycomm']:.2f}x gloo, above compute {extra['gloo'] / extra['pycomm']:.2f}x gloo")
        print(f"compute {c.item() * 1e3:9.1f} ms   (no communication)")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
