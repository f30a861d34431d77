"""Pipeline-parallel step time over "pycomm" and "gloo" in the same job:
torch.distributed.pipelining (1F1B by default) with one stage per rank and
32 MiB activations per microbatch (bench/pipeline_model.py), rounds
alternating between the two groups; and each rank's compute alone (the same
forward and backward with no communication), which bounds any backend's step.

    python -m pycomm.launch -n 4 bench/pipeline_step.py [--schedule 1f1b] [--steps 5]
"""
import argparse
import os
import statistics
import sys
import time
import warnings

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pipeline_model as pm  # noqa: E402

import pycomm.torch  # noqa: E402,F401  registers "pycomm"

warnings.filterwarnings("ignore")


def compute_only(schedule, r, n, mb, rows, hidden):
    """Seconds this rank's stages take to run forward and backward on every
    microbatch, no communication."""
    stages = pm.stages_of(schedule, r, n)
    model = pm.full_model(n * len(stages), hidden, 0)
    x = torch.randn(rows, hidden)
    t0 = time.perf_counter()
    for _ in range(mb):
        for i in stages:
            h = x.clone().requires_grad_()
            out = model[i](h)
            out.backward(torch.ones_like(out))
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--schedule", default="1f1b", choices=pm.SCHEDULES)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--microbatches", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=16)
    ap.add_argument("--activation-mib", type=float, default=32)
    a = ap.parse_args()
    # The world (barriers, the timing reductions) is pycomm's, as in ddp_step.py: a
    # gloo worker thread lets its last op's tensors go after the op completes,
    # and one still doing so as Python exits is std::terminate (torch's
    # gil_scoped_acquire in a thread CPython ends at exit).
    dist.init_process_group("pycomm")
    r, n = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)
    rows = int(a.activation_mib * (1 << 20)) // (4 * a.hidden)
    groups = {"gloo": dist.new_group(backend="gloo"), "pycomm": dist.group.WORLD}
    x, y = pm.make_batch(a.microbatches, rows, a.hidden, seed=0)
    scheds = {name: pm.build(a.schedule, r, n, g, a.microbatches, rows, a.hidden)[0] for name, g in groups.items()}
    times = {name: [] for name in groups}
    for name in groups:  # warm-up: shape inference, first allocations
        pm.step(scheds[name], a.schedule, r, n, x, y)
    for _ in range(a.rounds):
        for name in groups:
            dist.barrier()
            for _ in range(a.steps):
                t0 = time.perf_counter()
                pm.step(scheds[name], a.schedule, r, n, x, y)
                times[name].append(time.perf_counter() - t0)
    compute = statistics.median(compute_only(a.schedule, r, n, a.microbatches, rows, a.hidden) for _ in range(3))
    # Each step's time is its slowest rank's.
    med = {}
    for name, ts in times.items():
        t = torch.tensor(ts, dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        med[name] = statistics.median(t.tolist())
    c = torch.tensor([compute], dtype=torch.float64)
    dist.all_reduce(c, op=dist.ReduceOp.MAX)
    if r == 0:
        print(f"# pipeline_step: {a.schedule}, {n} ranks, {a.microbatches} microbatches, "
              f"{a.activation_mib:g} MiB activations ({rows} x {a.hidden} float32), torch {torch.__version__}")
        print(f"# step time: median of {a.rounds} x {a.steps} steps, the slowest rank's; "
              f"compute: the busiest rank's forward+backward alone")
        # Above the compute: what communication (and waiting on it) adds to a step.
        extra = {k: max(v - c.item(), 1e-9) for k, v in med.items()}
        print(f"{'':8}{'step':>9}    {'step - compute':>14}")
        print(f"gloo    {med['gloo'] * 1e3:9.1f} ms {extra['gloo'] * 1e3:11.1f} ms")
        print(f"pycomm  {med['pycomm'] * 1e3:9.1f} ms {extra['pycomm'] * 1e3:11.1f} ms   step {med['gloo'] / med['pycomm']:.2f}x "
              f"gloo, above compute {extra['gloo'] / extra['pycomm']:.2f}x gloo")
        print(f"compute {c.item() * 1e3:9.1f} ms   (no communication)")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
