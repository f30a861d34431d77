"""A "pycomm" torch job loses a rank and goes on (torchft style): rank 1
SIGKILLs itself in the middle of all_reduces; each survivor gets the error,
aborts the group, takes ProcessGroupPycomm.shrink() and trains a DDP step on
the new group, whose gradients are the survivors' average. Started by
tests/test_shrink.py (init through a file store, which outlives any rank)."""
import datetime
import os
import signal
import sys

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

import pycomm.torch  # noqa: F401  registers "pycomm"


def main():
    dist.init_process_group("pycomm", init_method=f"file://{sys.argv[1]}", rank=int(os.environ["RANK"]),
                            world_size=int(os.environ["WORLD_SIZE"]), timeout=datetime.timedelta(seconds=20))
    r, n = dist.get_rank(), dist.get_world_size()
    victim = 1
    t = torch.ones(1000)
    try:
        for step in range(10):
            if step == 3 and r == victim:
                os.kill(os.getpid(), signal.SIGKILL)
            dist.all_reduce(t)
    except Exception as e:  # noqa: BLE001  torch may wrap pycomm's error
        error = f"{type(e).__name__}: {e}"
    else:
        raise AssertionError("all_reduces went on without rank 1")
    assert "rank 1" in error, error
    pg = dist.group.WORLD
    pg.abort()
    new = pg.shrink()
    survivors = [p for p in range(n) if p != victim]
    assert (new.rank(), new.size()) == (survivors.index(r), n - 1)
    x = torch.full((3,), float(r + 1))
    new.allreduce([x]).wait()
    assert torch.equal(x, torch.full((3,), float(sum(p + 1 for p in survivors)))), x
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    ddp = DistributedDataParallel(model, process_group=new)
    inp = torch.full((2, 4), float(r))
    ddp(inp).sum().backward()
    # The averaged gradient of the bias is 2 on every survivor; the weight's is the mean input.
    want = sum(2.0 * p for p in survivors) / len(survivors)
    assert torch.allclose(model.weight.grad, torch.full((1, 4), want)), model.weight.grad
    print(f"rank {r}: shrank to rank {new.rank()} of {new.size()} after {error.split(':')[0]}; ddp ok", flush=True)
    new.shutdown()


if __name__ == "__main__":
    main()
