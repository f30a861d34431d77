"""Shrink: after a rank died, the survivors agree, through the store, on who
is left, and go on as a new communicator of those ranks (ULFM's
MPI_Comm_shrink, NCCL's ncclCommShrink).

Each survivor asks its own transport which peers are gone (a shared-memory
peer's segment lock is free, a TCP peer's control link reads end-of-file:
both are the kernel's word that the process exited) and posts that view. It
then waits, up to the timeout, for the view of every rank it believes alive,
and goes on only when they all posted the very same view. So a rank that is
merely slow is waited for, a rank that is alive but does not take part
(hung) makes every survivor fail with its name, and ranks that see different
deaths fail together, saying who sees what: never two smaller worlds.
The store must outlive the dead (a file store, torchrun's, or a TCP store
whose host did not die).
"""
import time

from .errors import CommError, TimeoutError as PycommTimeoutError

__all__ = ["agree"]


def _encode(ranks):
    return ",".join(map(str, sorted(ranks))).encode()


def _decode(data):
    return frozenset(int(r) for r in data.decode().split(",") if r)


def agree(comm, generation, timeout):
    """The survivors of comm (old ranks, in order), agreed by every one of
    them; raises CommError naming the ranks that did not answer or disagree."""
    lost = frozenset(comm._native.lost_peers())
    key = f"pycomm/{comm.name}/shrink{generation}"
    store = comm.store
    store.set(f"{key}/lost/{comm.rank}", _encode(lost))
    alive = [r for r in range(comm.size) if r not in lost]
    deadline = time.monotonic() + timeout
    views = {}
    for r in alive:
        try:
            views[r] = _decode(store.get(f"{key}/lost/{r}", max(0.0, deadline - time.monotonic())))
        except PycommTimeoutError:
            raise CommError(f"[rank {comm.rank}] shrink of {comm.name!r}: rank {r} is alive by this rank's "
                            f"transport but did not join the shrink within {timeout:g} s (lost here: "
                            f"{sorted(lost) or 'none'})") from None
    other = {r: v for r, v in views.items() if v != lost}
    if other:
        seen = "; ".join(f"rank {r} sees {sorted(v) or 'none'} gone" for r, v in sorted(other.items()))
        raise CommError(f"[rank {comm.rank}] shrink of {comm.name!r}: the survivors disagree on who is "
                        f"alive: this rank sees {sorted(lost) or 'none'} gone; {seen}")
    return alive
