"""`dist.all_reduce` of a small CPU tensor in a tight loop, on a "pycomm" group
and a "gloo" group of the same ranks, rounds alternating between the two;
the median of the rounds' per-call times (rank 0's, us).

    python -m pycomm.launch -n 2 bench/torch_allreduce_latency.py [--bytes 8] [--iters 10000] [--rounds 5]
"""
import argparse
import statistics
import time

import torch
import torch.distributed as dist

import pycomm.torch  # noqa: F401  registers "pycomm"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bytes", type=int, default=8, help="float32 tensor of this many bytes")
    ap.add_argument("--iters", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    dist.init_process_group("pycomm")
    groups = {"pycomm": dist.group.WORLD, "gloo": dist.new_group(backend="gloo")}
    n, r = dist.get_world_size(), dist.get_rank()
    t = torch.ones(max(1, a.bytes // 4))
    times = {name: [] for name in groups}
    for g in groups.values():
        for _ in range(a.iters // 10):
            dist.all_reduce(t, group=g)
    for _ in range(a.rounds):
        for name, g in groups.items():
            dist.barrier(group=g)
            t0 = time.perf_counter()
            for _ in range(a.iters):
                dist.all_reduce(t, group=g)
            times[name].append((time.perf_counter() - t0) / a.iters * 1e6)
    x = torch.full((3,), float(r + 1))  # the loop's results overflow; check one sum
    dist.all_reduce(x)
    assert x.tolist() == [n * (n + 1) / 2] * 3, x
    if r == 0:
        print(f"# dist.all_reduce of {t.numel() * 4} B (float32), {n} ranks, {a.rounds} rounds x {a.iters} calls, "
              "us per call")
        for name, v in times.items():
            print(f"{name:8s} median {statistics.median(v):8.2f}   rounds " + " ".join(f"{x:.2f}" for x in v))
        p, g = statistics.median(times["pycomm"]), statistics.median(times["gloo"])
        print(f"# pycomm / gloo time: {p / g:.2f}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
