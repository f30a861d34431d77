"""DDP step time: the same model and data through gloo, the backend "pycomm",
and pycomm with its int8 / bf16 comm hooks.

    python -m pycomm.launch -n 2 bench/ddp_step.py [--width 2048 --layers 6 --batch 8 --steps 10]
    python -m pycomm.launch -n 2 bench/ddp_step.py --model embedding   # communication-bound
    python bench/cluster.py --hosts 2 --rate 5gbit -- bench/ddp_step.py --overlap --rounds 3

Each rank trains an MLP of `layers` square Linear layers (6 x 2048^2 = 25M
parameters by default), or with --model embedding an EmbeddingBag of `rows`
x `width` (12288 x 2048 = 25M) and one Linear, on random data; the step
(forward, backward with DDP's gradient allreduce, SGD) is timed per rank,
and rank 0 prints the median over steps of the slowest rank's time per
configuration. The configurations take turns (--rounds), so a slow spell of
the machine falls on all of them. --overlap compares pycomm's allreduces run
inline with the same run on pycomm's worker thread, overlapping the backward
pass (PYCOMM_TORCH_OVERLAP; auto picks per placement).
"""
import argparse
import os
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import pycomm.torch  # noqa: F401  registers "pycomm"
from pycomm.torch import hooks


def build(args):
    """(model, input). mlp: `layers` square Linear layers, compute grows with
    the parameters. embedding: an EmbeddingBag of `rows` x `width` (dense
    gradients, as DDP sends them) and one Linear: about as many parameters
    and almost no compute, so the step is the gradient allreduce."""
    if args.model == "embedding":
        model = torch.nn.Sequential(torch.nn.EmbeddingBag(args.rows, args.width, mode="sum"),
                                    torch.nn.Linear(args.width, 1))
        return model, torch.randint(0, args.rows, (args.batch, 32))
    layers = []
    for _ in range(args.layers):
        layers += [torch.nn.Linear(args.width, args.width), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers), torch.randn(args.batch, args.width)


def make(group, args, hook=None, state=None):
    torch.manual_seed(0)
    model, x = build(args)
    ddp = DDP(model, process_group=group, gradient_as_bucket_view=args.bucket_view)
    if hook is not None:
        ddp.register_comm_hook(state, hook)
    return ddp, torch.optim.SGD(ddp.parameters(), lr=1e-3), x


def step_times(group, ddp, opt, x, steps):
    times = []
    for _ in range(steps):
        dist.barrier(group=group)
        t0 = time.perf_counter()
        opt.zero_grad()
        ddp(x).square().mean().backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return times


def pycomm_group(overlap):
    """A "pycomm" group whose large allreduces run inline ("0"), on pycomm's
    worker thread ("1"), or as PYCOMM_TORCH_OVERLAP says (None)."""
    if overlap is None:
        return dist.group.WORLD
    saved = os.environ.get("PYCOMM_TORCH_OVERLAP")
    os.environ["PYCOMM_TORCH_OVERLAP"] = overlap  # read when the group is made
    try:
        return dist.new_group(backend="pycomm")
    finally:
        if saved is None:
            del os.environ["PYCOMM_TORCH_OVERLAP"]
        else:
            os.environ["PYCOMM_TORCH_OVERLAP"] = saved


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=("mlp", "embedding"), default="mlp")
    p.add_argument("--rows", type=int, default=12288, help="embedding rows (--model embedding)")
    p.add_argument("--bucket-view", action="store_true",
                   help="DDP(gradient_as_bucket_view=True) for every configuration: gradients live in "
                        "the allreduce buckets, saving two copies of every gradient per step")
    p.add_argument("--width", type=int, default=2048)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=1,
                   help="run the configurations in turn this many times (steps each), medians over all")
    p.add_argument("--overlap", action="store_true",
                   help="plain pycomm twice: large allreduces inline and on pycomm's worker thread "
                        "(PYCOMM_TORCH_OVERLAP=0 / 1), in place of the hooks")
    args = p.parse_args()
    dist.init_process_group("pycomm")
    gloo = dist.new_group(backend="gloo")
    world = dist.group.WORLD
    if args.overlap:
        configs = [("gloo", gloo, None, None), ("pycomm, inline", pycomm_group("0"), None, None),
                   ("pycomm, overlapped", pycomm_group("1"), None, None)]
    else:
        configs = [("gloo", gloo, None, None), ("pycomm", world, None, None),
                   ("pycomm + int8_hook", world, hooks.int8_hook, hooks.Int8State()),
                   ("pycomm + bf16_hook", world, hooks.bf16_hook, None)]
    runs = [(name, group, *make(group, args, hook, state)) for name, group, hook, state in configs]
    for _, group, ddp, opt, x in runs:
        step_times(group, ddp, opt, x, args.warmup)
    times = {name: [] for name, *_ in runs}
    for _ in range(args.rounds):
        for name, group, ddp, opt, x in runs:
            times[name] += step_times(group, ddp, opt, x, args.steps)
    rows = []
    for name, *_ in runs:
        t = torch.tensor(times[name], dtype=torch.float64)
        # Each step's slowest rank. Not over gloo: older torch (2.3) destroys a gloo
        # group holding the GIL, and a gloo worker still releasing this tensor then
        # deadlocks with it when main() returns (pytorch PR 154976 releases the GIL there).
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=world)
        rows.append((name, t.median().item()))
    nparams = sum(p.numel() for p in runs[0][2].module.parameters())
    if dist.get_rank() == 0:
        what = (f"EmbeddingBag({args.rows}, {args.width}) + Linear({args.width}, 1)" if args.model == "embedding"
                else f"{args.layers} x Linear({args.width}, {args.width})")
        print(f"# DDP step, {dist.get_world_size()} ranks, {nparams / 1e6:.1f}M parameters "
              f"({what}), batch {args.batch}, median of {args.rounds} x {args.steps} steps, torch {torch.__version__}"
              + (", gradient_as_bucket_view" if args.bucket_view else ""))
        base = rows[0][1]
        for name, t in rows:
            print(f"{name:22s} {t * 1e3:9.1f} ms   {base / t:5.2f}x gloo")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
