"""DDP with pycomm's int8 hook under torchrun, checkpointing as it goes.

    torchrun --standalone --nproc-per-node=3 --max-restarts=2 tests/ranks/torch_elastic.py DIR [--kill-at A[,B]]

With --kill-at A[,B], rank 1 SIGKILLs itself at step A of the first attempt
(and B of the second); torchrun restarts the whole worker group, every rank
loads the last checkpoint (model, optimizer, the hook's error-feedback
residuals) and trains on. Checkpoints are taken every 4 steps and right
after the first step of a resumed attempt. Each step's data comes from a generator seeded by (step, rank),
so an interrupted run and an uninterrupted one see the same batches. Rank 0
writes DIR/result.json: the losses, a digest of the final parameters and
the attempt it finished in (--forget-int8 resumes without the hook's
residuals, a control). Started by tests/test_elastic.py.
"""
import argparse
import datetime
import hashlib
import json
import os
import signal

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

import pycomm.torch  # noqa: F401  registers "pycomm"
from pycomm.torch import hooks

STEPS = 16
EVERY = 4  # checkpoint after every 4th step


def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 1))


def batch(step, rank):
    g = torch.Generator().manual_seed(1000 * step + rank)
    x = torch.randn(16, 32, generator=g)
    return x, x[:, :1].sin() + 0.1 * torch.randn(16, 1, generator=g)


def save(ckpt, step, rank, ddp, opt, state, losses):
    """Every rank writes its own file (the residuals are per rank); the step
    becomes the one to resume from only when every rank's file is whole."""
    path = os.path.join(ckpt, f"step{step}_rank{rank}.pt")
    torch.save({"model": ddp.module.state_dict(), "opt": opt.state_dict(), "int8": state.state_dict(),
                "losses": losses}, path + ".tmp")
    os.replace(path + ".tmp", path)
    dist.barrier()
    if rank == 0:
        with open(os.path.join(ckpt, "latest.tmp"), "w") as f:
            f.write(str(step))
        os.replace(os.path.join(ckpt, "latest.tmp"), os.path.join(ckpt, "latest"))
    dist.barrier()


def resume(ckpt, rank, ddp, opt, state, forget_int8):
    try:
        with open(os.path.join(ckpt, "latest")) as f:
            step = int(f.read())
    except FileNotFoundError:
        return 0, []
    saved = torch.load(os.path.join(ckpt, f"step{step}_rank{rank}.pt"), weights_only=False)
    ddp.module.load_state_dict(saved["model"])
    opt.load_state_dict(saved["opt"])
    if not forget_int8:
        state.load_state_dict(saved["int8"])
    return step, saved["losses"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--kill-at", default="", help="comma-separated: the step rank 1 dies at in attempt 0, 1, ...")
    ap.add_argument("--forget-int8", action="store_true", help="resume without the hook's residuals (a control)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    dist.init_process_group("pycomm", timeout=datetime.timedelta(seconds=30))
    rank = dist.get_rank()
    ckpt = os.path.join(args.dir, "ckpt")
    os.makedirs(ckpt, exist_ok=True)

    net = model()
    ddp = DistributedDataParallel(net)
    state = hooks.Int8State(model=ddp)
    ddp.register_comm_hook(state, hooks.int8_hook)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    start, losses = resume(ckpt, rank, ddp, opt, state, args.forget_int8)
    kills = [int(k) for k in args.kill_at.split(",") if k]

    for step in range(start, STEPS):
        if kills[attempt:attempt + 1] == [step] and rank == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        x, y = batch(step, rank)
        loss = nn.functional.mse_loss(ddp(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        # Also right after resuming: the restored buckets still travel in the saved order then.
        if (step + 1) % EVERY == 0 or step == start > 0:
            save(ckpt, step + 1, rank, ddp, opt, state, losses)

    if rank == 0:
        digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in net.parameters())).hexdigest()
        with open(os.path.join(args.dir, "result.json"), "w") as f:
            json.dump({"losses": losses, "params": digest, "attempt": attempt, "resumed_from": start}, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
