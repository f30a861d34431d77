"""One rank of a shrink trial (tests/test_shrink.py starts the ranks itself:
pycomm.launch would stop the job when a rank dies).

argv: victim, kill_at. Every rank runs a mixed workload; before op kill_at
the victim SIGKILLs itself. Each survivor must see a pycomm error in the
first op that needs the victim (within the communicator's timeout), shrink() to the survivors, check an
allreduce there against numpy, and print one line."""
import os
import signal
import sys
import time

import numpy as np

import pycomm
from common import comm_from_env

TIMEOUT = 20.0


def workload(comm, i, rng_seed):
    x = np.random.default_rng([rng_seed, i, comm.rank]).standard_normal(1000 + 37 * i).astype(np.float32)
    kind = i % 4
    if kind == 0:
        comm.allreduce(x)
    elif kind == 1:
        comm.broadcast(x, root=i % comm.size)
    elif kind == 2:
        comm.allgather(x)
    else:
        comm.barrier()


def main():
    victim, kill_at = int(sys.argv[1]), int(sys.argv[2])
    comm = comm_from_env(timeout=TIMEOUT)
    r, n = comm.rank, comm.size
    t_fail = None
    try:
        for i in range(kill_at + 5):
            if i == kill_at and r == victim:
                os.kill(os.getpid(), signal.SIGKILL)
            t0 = time.monotonic()
            workload(comm, i, 7)
    except pycomm.CommError as e:
        t_fail = time.monotonic() - t0
        failed_in = i
        error = type(e).__name__
    else:
        raise AssertionError(f"rank {r}: no error although rank {victim} died before op {kill_at}")
    # The first op that needs the victim fails (a broadcast from another root may not; within
    # 4 ops an allreduce does), or the op before it where this rank was still finishing it
    # when another survivor's abort came.
    assert kill_at - 1 <= failed_in < kill_at + 4, \
        f"rank {r} failed in op {failed_in}; the victim died before op {kill_at}"
    assert t_fail <= TIMEOUT + 1.0, f"rank {r} took {t_fail:.1f} s to fail"
    t0 = time.monotonic()
    new = comm.shrink()
    t_shrink = time.monotonic() - t0
    survivors = [p for p in range(n) if p != victim]
    assert (new.rank, new.size) == (survivors.index(r), n - 1), (new.rank, new.size)
    x = np.full(5, float(r + 1), np.float32)
    new.allreduce(x)
    assert np.all(x == sum(p + 1 for p in survivors)), x
    new.barrier()
    comm.close()
    new.close()
    print(f"rank {r}: {error} in op {failed_in} after {t_fail:.3f} s; shrank to rank {new.rank} of {new.size} "
          f"in {t_shrink:.3f} s", flush=True)


if __name__ == "__main__":
    main()
