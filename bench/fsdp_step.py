"""FSDP2 training-step time over "pycomm" and "gloo" in the same job: a
4-layer MLP (25M parameters at the default width), each Linear and the root
fully_shard'ed, SGD; rounds alternate between the two groups. Also each
rank's compute alone (the same model unsharded, forward and backward, no
communication), which bounds any backend's step.

    python -m pycomm.launch -n 2 bench/fsdp_step.py [--width 2500] [--steps 5] [--mp]
        [--compress weights,grads] [--loss-steps 300 [--loss-json LOSS.json]]
"""
import argparse
import json
import statistics
import time
import warnings

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

import pycomm.torch  # noqa: F401  registers "pycomm"
from pycomm.torch import fsdp

warnings.filterwarnings("ignore")


def mlp(width, layers):
    torch.manual_seed(0)
    return nn.Sequential(*[m for _ in range(layers) for m in (nn.Linear(width, width), nn.ReLU())])


def sharded(width, layers, group, mp, compress=None, error_feedback=True):
    model = mlp(width, layers)
    kw = {"mesh": DeviceMesh.from_group(group, "cpu")}
    if mp:
        kw["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for m in model:
        if isinstance(m, nn.Linear):
            fully_shard(m, **kw)
    fully_shard(model, **kw)
    if compress:
        fsdp.compress(model, weights="int8" if "weights" in compress else None,
                      grads="int8" if "grads" in compress else None, error_feedback=error_feedback)
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
    ap.add_argument("--compress", type=lambda v: set(v.split(",")), default=set(),
                    help="weights,grads: also pycomm with those in int8")
    ap.add_argument("--loss-steps", type=int, default=0, help="also train this many steps and print the losses")
    ap.add_argument("--loss-json", help="write every step's loss of each configuration here (bench/plot_loss.py)")
    a = ap.parse_args()
    if not a.compress <= {"weights", "grads"}:
        ap.error("--compress takes weights, grads or weights,grads")
    # The world (barriers, the timing reductions) is pycomm's, as in ddp_step.py: a
    # gloo worker thread lets its last op's tensors go after the op completes,
    # and one still doing so as Python exits is std::terminate (torch's
    # gil_scoped_acquire in a thread CPython ends at exit).
    dist.init_process_group("pycomm")
    r, n = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)
    groups = {"gloo": dist.new_group(backend="gloo"), "pycomm": dist.group.WORLD}
    configs = {name: (grp, None) for name, grp in groups.items()}
    if a.compress:
        configs["pycomm " + "+".join(sorted(a.compress, reverse=True))] = (dist.group.WORLD, a.compress)
    g = torch.Generator().manual_seed(r)
    x, y = torch.randn(a.batch, a.width, generator=g), torch.randn(a.batch, a.width, generator=g)
    runs = {name: sharded(a.width, a.layers, grp, a.mp, comp) for name, (grp, comp) in configs.items()}
    times = {name: [] for name in runs}
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
        w = max(len(k) for k in med) + 2
        print(f"{'':{w}}{'step':>9}    {'step - compute':>14}   last loss")
        for k in med:
            ratios = "" if k == "gloo" else (f"   step {med['gloo'] / med[k]:.2f}x gloo, above compute "
                                             f"{extra['gloo'] / extra[k]:.2f}x gloo")
            if k not in ("gloo", "pycomm"):
                ratios += f", step {med['pycomm'] / med[k]:.2f}x pycomm float32"
            print(f"{k:{w}}{med[k] * 1e3:9.1f} ms {extra[k] * 1e3:11.1f} ms   {losses[k]:.6f}{ratios}")
        print(f"{'compute':{w}}{c.item() * 1e3:9.1f} ms   (no communication)")
    if a.loss_steps:
        loss_curves(a, configs, x, r)
    dist.destroy_process_group()


def loss_curves(a, configs, x, r):
    """Each configuration trained a.loss_steps steps from the same start to fit
    a fixed random teacher (tanh of a linear map) on each rank's batch; the
    loss averaged over ranks, every tenth of the run."""
    teacher = torch.randn(a.width, a.width, generator=torch.Generator().manual_seed(12345)) / a.width ** 0.5
    y = torch.tanh(x @ teacher)
    curves = {}
    runs = [(name, grp, comp, True) for name, (grp, comp) in configs.items() if name != "gloo"]  # gloo: pycomm's arithmetic
    if "grads" in a.compress:
        runs += [(name + ", no feedback", grp, comp, False) for name, grp, comp, _ in runs if comp]
    for name, grp, comp, feedback in runs:
        model, _ = sharded(a.width, a.layers, grp, a.mp, comp, feedback)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        losses = torch.tensor([step(model, opt, x, y) for _ in range(a.loss_steps)], dtype=torch.float64)
        dist.all_reduce(losses)
        curves[name] = (losses / dist.get_world_size()).tolist()
    if r == 0:
        names = list(curves)
        print(f"# loss over {a.loss_steps} steps (Adam lr 1e-3, each rank's batch fixed, a tanh teacher's "
              "targets), mean of the ranks")
        w = max(len(k) for k in names) + 2
        print("step " + "".join(f"{k:>{w}}" for k in names))
        for i in sorted(set(range(0, a.loss_steps, max(1, a.loss_steps // 10))) | {a.loss_steps - 1}):
            print(f"{i + 1:4d} " + "".join(f"{curves[k][i]:{w}.6f}" for k in names))
        base = curves["pycomm"][-1]
        for k in names[1:]:
            print(f"# {k}: final loss {curves[k][-1]:.6f}, {100 * (curves[k][-1] - base) / base:+.3f}% vs float32")
        if a.loss_json:
            with open(a.loss_json, "w") as f:
                json.dump({"world_size": dist.get_world_size(), "width": a.width, "layers": a.layers,
                           "batch": a.batch, "mp": a.mp, "curves": curves}, f)


if __name__ == "__main__":
    main()
