"""The flight recorder's cost on the smallest op: an 8-byte allreduce on a
communicator with the recorder on (the default 2000 entries) and one with it
off, alternating rounds in one job; median of the rounds' per-op means.

    python -m pycomm.launch -n 2 bench/flight_overhead.py [--iters 20000] [--rounds 7]
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
    a = ap.parse_args()
    comms = {"on": pycomm.Communicator.from_env(name="fr-on"),
             "off": pycomm.Communicator.from_env(name="fr-off", options={"flight_recorder": 0})}
    x = np.ones(2, np.float32)
    per_op = {k: [] for k in comms}
    for c in comms.values():
        for _ in range(1000):
            c.allreduce(x)
    for _ in range(a.rounds):
        for k, c in comms.items():
            c.barrier()
            t0 = time.perf_counter()
            for _ in range(a.iters):
                c.allreduce(x)
            per_op[k].append((time.perf_counter() - t0) / a.iters * 1e6)
    med = {k: statistics.median(v) for k, v in per_op.items()}
    if comms["on"].rank == 0:
        print(f"# 8-byte allreduce, {comms['on'].size} ranks over {comms['on'].transport}, "
              f"median of {a.rounds} rounds x {a.iters}")
        for k in comms:
            print(f"flight recorder {k:3s}  {med[k]:7.3f} us/op   rounds: " + " ".join(f"{t:.2f}" for t in per_op[k]))
        print(f"on / off: {med['on'] / med['off']:.3f}")
    for c in comms.values():
        c.close()


if __name__ == "__main__":
    main()
