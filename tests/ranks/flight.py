"""Flight-recorder scenarios on real ranks; each rank dumps into
PYCOMM_FLIGHT_DIR, and the test analyzes the files.

  hang K:     every rank runs K allreduces; rank size-1 then stops calling
              (it dumps its record itself, as SIGUSR1 would make it), the
              others time out in op K and dump on the error.
  mismatch K: after K allreduces (and a store barrier) rank 1 calls
              allreduce with one more element than the others: a
              MismatchError on every rank, which dumps.
  p2p K:      after K allreduces rank 0 sends rank 1 two 1 MiB messages
              (tag 5; rendezvous, so a send waits for its receive) and
              rank 1 receives one; rank 1 then waits for a message (tag 7)
              rank 0 never sends. Both time out; each dumps.
Exits 0 when the expected error was raised where it should be."""
import sys
import time

import numpy as np

import pycomm
from common import comm_from_env


def main():
    scenario, k = sys.argv[1], int(sys.argv[2])
    comm = comm_from_env(timeout=3)
    r, n = comm.rank, comm.size
    x = np.ones(4, np.float32)
    for _ in range(k):
        comm.allreduce(x)
    if scenario == "hang":
        comm.barrier()  # op k: everyone reaches it
        if r == n - 1:
            comm.dump_flight_record()
            time.sleep(6)  # past the others' timeout: they fail without it
            return
        try:
            comm.allreduce(x)
        except pycomm.CommError as e:
            assert "timed out" in str(e) or isinstance(e, (pycomm.TimeoutError, pycomm.PeerLostError)), e
        else:
            raise AssertionError("an allreduce without rank n-1 completed")
    elif scenario == "mismatch":
        # Every rank done with op k-1 first (a rank still in it would fail there, on the others' abort).
        comm.store.barrier("flight-test", r, n, 30)
        try:
            comm.allreduce(np.ones(5 if r == 1 else 4, np.float32))
        except pycomm.CommError as e:
            print(f"[rank {r}] raised {type(e).__name__}", flush=True)
        else:
            raise AssertionError("mismatched allreduces completed")
    elif scenario == "p2p":
        big = np.ones(1 << 18, np.float32)
        if r in (0, 1):
            op = comm.send if r == 0 else comm.recv
            op(big, 1 - r, tag=5)
            try:
                op(big, 1 - r, tag=5 if r == 0 else 7, timeout=2)
            except pycomm.TimeoutError:
                comm.dump_flight_record()
            else:
                raise AssertionError(f"rank {r}'s second {op.__name__} completed without its peer")
        comm.store.barrier("flight-test", r, n, 30)
    else:
        raise SystemExit(f"unknown scenario {scenario}")


if __name__ == "__main__":
    main()
