"""DTensor over "pycomm": redistribution between Shard(0), Shard(1),
Replicate and Partial on a 1-D mesh (and a (2, n/2) mesh on 4 ranks), each
result against the global tensor every rank builds from the same seed; and
tensor parallelism (parallelize_module with ColwiseParallel/RowwiseParallel
on an MLP): output and gradients equal to the model run in one process."""
import itertools
import warnings

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor, Partial, Replicate, Shard, distribute_tensor
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

import pycomm.torch  # noqa: F401  registers "pycomm"

warnings.filterwarnings("ignore")


def global_tensor(n, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(4 * n + 1, 3 * n + 2, generator=g).to(dtype)  # uneven shards on purpose


def redistribute_1d(r, n):
    mesh = init_device_mesh("cpu", (n,), backend_override={0: "pycomm"})
    assert isinstance(mesh.get_group(), pycomm.torch.ProcessGroupPycomm)
    for dtype in (torch.float32, torch.bfloat16, torch.int64):
        G = global_tensor(n, dtype=dtype) if dtype != torch.int64 else torch.arange(
            (4 * n + 1) * (3 * n + 2)).reshape(4 * n + 1, 3 * n + 2)
        placements = [Shard(0), Shard(1), Replicate()]
        for a, b in itertools.permutations(placements, 2):
            d = distribute_tensor(G, mesh, [a]).redistribute(mesh, [b])
            assert d.placements == (b,)
            assert torch.equal(d.full_tensor(), G), (dtype, a, b)
            if isinstance(b, Shard):
                want = list(torch.chunk(G, n, dim=b.dim))
                assert torch.equal(d.to_local(), want[r] if r < len(want) else G.new_empty(0)), (a, b)
        # Partial (sum): each rank holds a part; to Replicate is an allreduce,
        # to Shard a reduce-scatter.
        if dtype == torch.bfloat16:
            continue
        parts = [global_tensor(n, seed=10 + q).to(dtype) for q in range(n)] if dtype != torch.int64 else \
            [G * (q + 1) for q in range(n)]
        total = sum(parts)
        for b in (Replicate(), Shard(0), Shard(1)):
            d = DTensor.from_local(parts[r], mesh, [Partial()]).redistribute(mesh, [b])
            got = d.full_tensor()
            assert torch.allclose(got.double(), total.double(), rtol=1e-5, atol=1e-5), (dtype, b)
    if r == 0:
        print("dtensor 1-d redistribution ok", flush=True)


def redistribute_2d(r, n):
    mesh = init_device_mesh("cpu", (2, n // 2), mesh_dim_names=("a", "b"),
                            backend_override={"a": "pycomm", "b": "pycomm"})
    G = global_tensor(n)
    layouts = [[Shard(0), Shard(1)], [Replicate(), Shard(0)], [Shard(1), Replicate()],
               [Replicate(), Replicate()], [Shard(0), Shard(0)]]
    for a, b in itertools.permutations(layouts, 2):
        d = distribute_tensor(G, mesh, a).redistribute(mesh, b)
        assert torch.equal(d.full_tensor(), G), (a, b)
    parts = [global_tensor(n, seed=20 + q) for q in range(n)]
    d = DTensor.from_local(parts[r], mesh, [Partial(), Partial()]).redistribute(mesh, [Replicate(), Shard(1)])
    assert torch.allclose(d.full_tensor(), sum(parts), rtol=1e-5, atol=1e-5)
    if r == 0:
        print("dtensor 2-d redistribution ok", flush=True)


def mlp(n):
    torch.manual_seed(5)
    hidden = 8 * n  # tensor parallelism splits it evenly
    return nn.Sequential(nn.Linear(12, hidden), nn.ReLU(), nn.Linear(hidden, 12))


def tensor_parallel(r, n):
    mesh = init_device_mesh("cpu", (n,), backend_override={0: "pycomm"})
    ref, tp = mlp(n), mlp(n)
    parallelize_module(tp, mesh, {"0": ColwiseParallel(), "2": RowwiseParallel()})
    g = torch.Generator().manual_seed(6)
    x = torch.randn(7, 12, generator=g)  # the same input on every rank (TP replicates it)
    want = ref(x)
    got = tp(x)
    got = got.full_tensor() if isinstance(got, DTensor) else got
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-6), (got - want).abs().max()
    want.square().sum().backward()
    got.square().sum().backward()
    for (name, p), q in zip(tp.named_parameters(), ref.parameters()):
        grad = p.grad.full_tensor() if isinstance(p.grad, DTensor) else p.grad
        assert torch.allclose(grad, q.grad, rtol=1e-4, atol=1e-6), (name, (grad - q.grad).abs().max())
    if r == 0:
        print("tensor parallel ok", flush=True)


def main():
    dist.init_process_group("pycomm")
    r, n = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)
    redistribute_1d(r, n)
    if n % 2 == 0 and n >= 4:
        redistribute_2d(r, n)
    tensor_parallel(r, n)
    dist.barrier()
    dist.destroy_process_group()
    if r == 0:
        print(f"torch dtensor ok on {n} ranks", flush=True)


if __name__ == "__main__":
    main()
