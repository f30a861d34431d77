"""The flight recorder's cost on the smallest op: an 8-byte allreduce (or
an 8-byte send/recv ping-pong between ranks 0 and 1, --op sendrecv) on a
communicator with the recorder on (the default 2000 entries) and one with it
off, alternating rounds in one job: the median of the rounds' per-op means,
and the median of each round's on/off ratio (neighbouring rounds, so the
VM's drift between minutes cancels).

    python -m pycomm.launch -n 2 bench/flight_overhead.py [--op allreduce|sendrecv] [--iters 20000] [--rounds 7]
"""
import argparse
import statistics
import time

import numpy as np

import pycomm


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--op", choices=("allreduce", "sendrecv"), default="allreduce")
    a = ap.parse_args()
    comms = {"on": pycomm.Communicator.from_env(name="fr-on"),
             "off": pycomm.Communicator.from_env(name="fr-off", options={"flight_recorder": 0})}
    x = np.ones(2, np.float32)
    rank = comms["on"].rank

    def run(c, iters):
        if a.op == "allreduce":
            for _ in range(iters):
                c.allreduce(x)
        elif rank == 0:  # one round trip per iteration
            for _ in range(iters):
                c.send(x, 1)
                c.recv(x, 1)
        elif rank == 1:
            for _ in range(iters):
                c.recv(x, 0)
                c.send(x, 0)

    per_op = {k: [] for k in comms}
    for c in comms.values():
        run(c, 1000)
    for _ in range(a.rounds):
        for k, c in comms.items():
            c.barrier()
            t0 = time.perf_counter()
            run(c, a.iters)
            per_op[k].append((time.perf_counter() - t0) / a.iters * 1e6)
    med = {k: statistics.median(v) for k, v in per_op.items()}
    if rank == 0:
        what = "allreduce" if a.op == "allreduce" else "send/recv round trip"
        print(f"# 8-byte {what}, {comms['on'].size} ranks over {comms['on'].transport}, "
              f"median of {a.rounds} rounds x {a.iters}")
        for k in comms:
            print(f"flight recorder {k:3s}  {med[k]:7.3f} us/op   rounds: " + " ".join(f"{t:.2f}" for t in per_op[k]))
        ratios = [on / off for on, off in zip(per_op["on"], per_op["off"])]
        print(f"on / off: {med['on'] / med['off']:.3f} (medians); {statistics.median(ratios):.3f} "
              "(median of the rounds' ratios)")
    for c in comms.values():
        c.close()


if __name__ == "__main__":
    main()
