"""What ordering GPU work across processes costs when every rank shares one
GPU (no MPS: the processes' contexts time-slice), with torch alone.

    python -m pycomm.launch -n 2 bench/gpu_sync_cost.py

Per iteration, by mode (200 iterations, back to back; the slowest rank):
  host           a host barrier (pycomm over shared memory)
  kernel         a tiny kernel on each rank's stream, then the barrier
  events         each rank records an IPC event, barrier, its stream waits
                 on every peer's event (what pycomm's GPU path does twice
                 per op)
  events+kernel  both
  pycomm 4 KiB   comm.allreduce of 1024 float32 on the GPU
Prints the host time per iteration (queueing only) and the time until the
GPU has finished everything, per iteration.
"""
import time

import numpy as np
import torch

import pycomm


def main():
    torch.cuda.set_device(0)
    comm = pycomm.Communicator.from_env()
    n, r = comm.size, comm.rank
    stream = torch.cuda.current_stream()
    events = [torch.cuda.Event(interprocess=True) for _ in range(2)]
    peers = []
    for ev in events:
        ev.record(stream)
        mine = np.frombuffer(ev.ipc_handle(), np.uint8).copy()
        every = comm.allgather(mine).reshape(n, -1)
        peers.append([torch.cuda.Event.from_ipc_handle(0, bytes(every[p])) for p in range(n) if p != r])
    torch.cuda.synchronize()
    x = torch.zeros(1024, device="cuda")

    def run(mode, iters):
        torch.cuda.synchronize()
        comm.barrier()
        t0 = time.perf_counter()
        for i in range(iters):
            if mode == "pycomm 4 KiB":
                comm.allreduce(x)
                continue
            if "kernel" in mode:
                x.add_(1)
            if "events" in mode:
                events[i % 2].record(stream)
            comm.barrier()
            if "events" in mode:
                for pe in peers[i % 2]:
                    stream.wait_event(pe)
        queued = time.perf_counter()
        torch.cuda.synchronize()
        done = time.perf_counter()
        t = np.array([(queued - t0) / iters, (done - t0) / iters]) * 1e6
        comm.allreduce(t, op="max")
        return t

    rows = []
    for mode in ("host", "kernel", "events", "events+kernel", "pycomm 4 KiB"):
        run(mode, 20)
        rows.append((mode, *run(mode, 200)))
    if r == 0:
        print(f"# {n} processes on {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
        print("| per iteration | host, queued (us) | until the GPU is done (us) |")
        print("| --- | ---: | ---: |")
        for mode, q, d in rows:
            print(f"| {mode} | {q:.1f} | {d:.1f} |")
    comm.close()


if __name__ == "__main__":
    main()
