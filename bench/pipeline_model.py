"""A pipeline-parallel model for tests and benchmarks: stages of
Linear + Tanh over a narrow hidden size, so that a microbatch's activation
can be tens of MiB while each stage computes little (communication, not the
2-core machine's FLOPs, is what a pipeline step over pycomm should measure).

`build(...)` gives this rank's torch.distributed.pipelining schedule over
`group`; `reference(...)` the single-process losses and gradients every rank
can compute from the same seed."""
import torch
import torch.nn as nn

__all__ = ["SCHEDULES", "build", "make_batch", "reference"]


def _schedules():
    from torch.distributed import pipelining as pp
    return {"gpipe": pp.ScheduleGPipe, "1f1b": pp.Schedule1F1B, "interleaved1f1b": pp.ScheduleInterleaved1F1B}


SCHEDULES = ("gpipe", "1f1b", "interleaved1f1b")


def full_model(num_stages, hidden, seed):
    torch.manual_seed(seed)
    return nn.ModuleList(nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh()) for _ in range(num_stages))


def make_batch(microbatches, rows, hidden, seed):
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(microbatches * rows, hidden, generator=g)
    y = torch.randn(microbatches * rows, hidden, generator=g)
    return x, y


def loss_fn(out, target):
    return nn.functional.mse_loss(out, target)


def stages_of(schedule, rank, size):
    """The stage indices rank holds: one, or two for the interleaved schedule (rank, rank + size)."""
    return [rank, rank + size] if schedule == "interleaved1f1b" else [rank]


def build(schedule, rank, size, group, microbatches, rows, hidden, seed=0):
    """(schedule object, this rank's stage modules)."""
    from torch.distributed.pipelining import PipelineStage

    indices = stages_of(schedule, rank, size)
    num_stages = size * len(indices)
    model = full_model(num_stages, hidden, seed)
    # Shapes inferred at the first step (a metadata exchange through the group).
    stages = [PipelineStage(model[i], i, num_stages, torch.device("cpu"), group=group) for i in indices]
    cls = _schedules()[schedule]
    if schedule == "interleaved1f1b":
        return cls(stages, microbatches, loss_fn=loss_fn), [model[i] for i in indices]
    return cls(stages[0], microbatches, loss_fn=loss_fn), [model[indices[0]]]


def step(sched, schedule, rank, size, x, y):
    """One pipeline step; the per-microbatch losses on the rank holding the last stage, else []."""
    indices = stages_of(schedule, rank, size)
    num_stages = size * len(indices)
    first, last = 0 in indices, num_stages - 1 in indices
    losses = []
    if first and last:
        sched.step(x, target=y, losses=losses)
    elif first:
        sched.step(x)
    elif last:
        sched.step(target=y, losses=losses)
    else:
        sched.step()
    return losses


def reference(num_stages, microbatches, rows, hidden, seed=0):
    """(per-microbatch losses, per-stage parameter gradients) of the whole
    model in one process, gradients averaged over microbatches as the
    schedules' scale_grads does."""
    model = full_model(num_stages, hidden, seed)
    x, y = make_batch(microbatches, rows, hidden, seed)
    losses = []
    for xm, ym in zip(x.chunk(microbatches), y.chunk(microbatches)):
        h = xm
        for stage in model:
            h = stage(h)
        loss = loss_fn(h, ym)
        losses.append(loss.detach())
        (loss / microbatches).backward()
    return losses, [[p.grad for p in stage.parameters()] for stage in model]
