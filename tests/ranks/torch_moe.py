"""A toy mixture-of-experts layer with expert parallelism over "pycomm":
top-1 gating, two experts per rank, each token dispatched to its expert's
rank and combined back with the differentiable all_to_all_single and uneven
split sizes (rank 1 has no tokens at all). Output, loss and every gradient
(input, gate, experts) are checked against the same layer run in one
process on every rank's tokens, which each rank rebuilds from the seeds."""
import warnings

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed.nn.functional import all_to_all_single as a2a

import pycomm.torch  # noqa: F401  registers "pycomm"

warnings.filterwarnings("ignore")
HIDDEN = 16
PER_RANK = 2                 # experts per rank
TOKENS = [23, 0, 41, 9]      # tokens on rank r: TOKENS[r % 4]


class MoE(nn.Module):
    def __init__(self, n):
        super().__init__()
        torch.manual_seed(7)  # the same layer on every rank
        self.gate = nn.Linear(HIDDEN, n * PER_RANK)
        self.experts = nn.ModuleList(
            nn.Sequential(nn.Linear(HIDDEN, 2 * HIDDEN), nn.GELU(), nn.Linear(2 * HIDDEN, HIDDEN))
            for _ in range(n * PER_RANK))


def tokens(q):
    g = torch.Generator().manual_seed(100 + q)
    return torch.randn(TOKENS[q % 4], HIDDEN, generator=g), torch.randn(TOKENS[q % 4], HIDDEN, generator=g)


def route(model, x):
    p, e = model.gate(x).softmax(-1).max(-1)
    return p, e


def apply_experts(experts, x, e):
    """Runs expert k on the rows where e == k; rows keep their order."""
    order = torch.argsort(e, stable=True)
    xs, es = x[order], e[order]
    out = torch.cat([experts[k](xs[es == k]) for k in range(len(experts))])
    return out[torch.argsort(order)]


def reference(model, n):
    xs = [tokens(q)[0].requires_grad_() for q in range(n)]
    x = torch.cat(xs)
    p, e = route(model, x)
    y = apply_experts(model.experts, x, e) * p[:, None]
    targets = torch.cat([tokens(q)[1] for q in range(n)])
    ((y - targets) ** 2).sum().backward()
    return xs, y.detach(), e


def expert_parallel(model, r, n):
    x, target = tokens(r)
    x.requires_grad_()
    p, e = route(model, x)
    order = torch.argsort(e, stable=True)        # tokens grouped by destination rank, then expert
    per_expert = torch.bincount(e, minlength=n * PER_RANK)
    send = per_expert.view(n, PER_RANK).sum(1).tolist()
    counts = torch.empty_like(per_expert)        # [src][local expert]: what each rank sends here
    dist.all_to_all_single(counts, per_expert)
    counts = counts.view(n, PER_RANK)
    recv = counts.sum(1).tolist()
    got = a2a(x.new_empty(sum(recv), HIDDEN), x[order], recv, send)
    local_e = torch.cat([torch.repeat_interleave(torch.arange(PER_RANK), counts[s]) for s in range(n)])
    mine = model.experts[r * PER_RANK:(r + 1) * PER_RANK]
    back = a2a(x.new_empty(len(x), HIDDEN), apply_experts(mine, got, local_e), send, recv)
    y = back[torch.argsort(order)] * p[:, None]
    ((y - target) ** 2).sum().backward()
    for prm in model.gate.parameters():          # the gate is replicated: its gradient is summed
        dist.all_reduce(prm.grad)
    return x, y.detach(), send, recv


def close(a, b, what):
    assert a.shape == b.shape and torch.allclose(a, b, rtol=1e-5, atol=1e-5), \
        f"{what}: max diff {(a - b).abs().max() if a.shape == b.shape else (a.shape, b.shape)}"


def main():
    dist.init_process_group("pycomm")
    r, n = dist.get_rank(), dist.get_world_size()
    ref_model, model = MoE(n), MoE(n)
    ref_xs, ref_y, ref_e = reference(ref_model, n)
    x, y, send, recv = expert_parallel(model, r, n)
    lo = sum(TOKENS[q % 4] for q in range(r))
    close(y, ref_y[lo:lo + len(x)], "output")
    close(x.grad, ref_xs[r].grad, "input gradient")
    for a, b in zip(model.gate.parameters(), ref_model.gate.parameters()):
        close(a.grad, b.grad, "gate gradient")
    for k in range(r * PER_RANK, (r + 1) * PER_RANK):
        for a, b in zip(model.experts[k].parameters(), ref_model.experts[k].parameters()):
            if b.grad is None:  # no token chose expert k
                assert a.grad is None or not a.grad.any(), f"expert {k} got a gradient without tokens"
            else:
                close(a.grad, b.grad, f"expert {k} gradient")
    # The routing must really be uneven, or the test checks less than it says.
    splits = [None] * n
    dist.all_gather_object(splits, (send, recv))
    if r == 0:
        assert len({tuple(s) for s, _ in splits}) > 1 and any(0 in s for s, _ in splits), splits
        print(f"torch moe ok on {n} ranks: send splits {[s for s, _ in splits]}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
