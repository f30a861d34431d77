"""One rank dies by SIGKILL in the middle of a collective; the others must
raise PeerLostError naming it within the timeout + 1 s, and exit cleanly.

    peer_death.py COLLECTIVE VICTIM TIMEOUT

Started by tests/test_peer_death.py as plain processes (pycomm.launch would
stop the survivors when the victim dies). Each survivor prints one line:
"survivor R: PeerLostError after S s: message".
"""
import os
import signal
import sys
import threading
import time

import numpy as np

import pycomm
from common import comm_from_env

COUNT = 3 << 20  # 12 MiB of float32 (divisible by 2, 3, 4): every op takes a while


def run_op(comm, coll, x, out):
    if coll == "allreduce":
        comm.allreduce(x)
    elif coll == "reduce_scatter":
        comm.reduce_scatter(x, out=out)
    elif coll == "allgather":
        comm.allgather(out[:COUNT // comm.size], out=x[:COUNT // comm.size * comm.size])
    elif coll == "broadcast":
        comm.broadcast(x, root=comm.size - 1)
    elif coll == "int8_allreduce":
        comm.allreduce(x, compress="int8")
    elif coll == "alltoall":  # over shm, blocks of 4 MiB: the single-copy channel
        comm.alltoall(x, out=x.copy())
    elif coll == "gather":  # over shm (PYCOMM_SHM_SPLIT=1), blocks of 4 MiB: the split single copy
        comm.gather(x[:COUNT // comm.size], root=0, out=x.copy() if comm.rank == 0 else None)
    elif coll == "scatter":
        comm.scatter(x if comm.rank == 0 else None, root=0, out=out)
    else:
        raise SystemExit(f"unknown collective {coll}")


def main():
    coll, victim, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    comm = comm_from_env(timeout=timeout)
    r = comm.rank
    x = np.ones(COUNT, np.float32)
    out = np.empty(COUNT // comm.size, np.float32)
    run_op(comm, coll, x, out)  # everyone is connected and has run one
    comm.barrier()
    if r == victim:
        # Die while the op below is moving data.
        threading.Timer(0.02, lambda: os.kill(os.getpid(), signal.SIGKILL)).start()
    while True:
        started = time.monotonic()
        try:
            x.fill(1.0)
            run_op(comm, coll, x, out)
        except pycomm.PeerLostError as e:
            took = time.monotonic() - started
            print(f"survivor {r}: PeerLostError after {took:.2f} s: {e}", flush=True)
            break
        except pycomm.CommError as e:
            print(f"survivor {r}: wrong error {type(e).__name__}: {e}", flush=True)
            sys.exit(1)
        if r == victim:
            continue  # until the timer fires
    comm.close()


if __name__ == "__main__":
    main()
