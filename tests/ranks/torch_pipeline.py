"""torch.distributed.pipelining over "pycomm": each schedule (GPipe, 1F1B,
interleaved 1F1B) on every rank of the job, 32 MiB activations per
microbatch; per-microbatch losses and every stage's gradients against the
whole model run in one process (bench/pipeline_model.py). argv[1:]: the
schedules (default all)."""
import os
import sys
import warnings

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench"))
import pipeline_model as pm  # noqa: E402

import pycomm.torch  # noqa: E402,F401  registers "pycomm"

warnings.filterwarnings("ignore")
HIDDEN = 16
ROWS = (32 << 20) // (4 * HIDDEN)  # a microbatch's activation: 32 MiB of float32
MICROBATCHES = 4


def main():
    dist.init_process_group(os.environ.get("TEST_BACKEND", "pycomm"))
    r, n = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)
    x, y = pm.make_batch(MICROBATCHES, ROWS, HIDDEN, seed=0)
    for schedule in sys.argv[1:] or pm.SCHEDULES:
        sched, mine = pm.build(schedule, r, n, dist.group.WORLD, MICROBATCHES, ROWS, HIDDEN)
        losses = pm.step(sched, schedule, r, n, x, y)
        stages = pm.stages_of(schedule, r, n)
        want_losses, want_grads = pm.reference(n * len(stages), MICROBATCHES, ROWS, HIDDEN)
        if losses:
            got = torch.stack([l.detach() for l in losses])
            assert torch.allclose(got, torch.stack(want_losses), rtol=1e-5, atol=0), (schedule, got, want_losses)
        for module, index in zip(mine, stages):
            for p, want in zip(module.parameters(), want_grads[index]):
                assert torch.allclose(p.grad, want, rtol=1e-4, atol=1e-7), \
                    f"{schedule}: stage {index} gradient differs by {(p.grad - want).abs().max():.3g}"
        dist.barrier()
        if r == 0:
            print(f"pipeline {schedule} ok on {n} ranks", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
