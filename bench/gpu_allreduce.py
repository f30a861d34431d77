"""Allreduce of torch CUDA tensors through pycomm, every rank on one GPU
(CUDA IPC), against the device's copy bandwidth.

    python -m pycomm.launch -n 2 bench/gpu_allreduce.py [MiB ...]

Prints a markdown table (rank 0), float32 then compress="int8" (algbw on the
float32 bytes): size, time per op, algbw, busbw
(algbw x 2(n-1)/n, as nccl-tests) and busbw as a share of the device-to-device
copy bandwidth measured here (bytes read + written by a torch copy_).

Ops return once queued (the caller's stream is ordered after them), so, as
nccl-tests do, a run of back-to-back ops is timed from a barrier to the end
of a device synchronisation, and the time per op is that over the count; the
slowest rank's time counts. Three runs per size, the best kept.
"""
import sys
import time

import numpy as np
import torch

import pycomm


def copy_bandwidth(nbytes=256 << 20, reps=20):
    a = torch.empty(nbytes // 4, device="cuda")
    b = torch.empty_like(a)
    b.copy_(a)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(reps):
        start.record()
        b.copy_(a)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    times.sort()
    return 2 * nbytes / times[len(times) // 2] / 1e9  # read + written


def main():
    sizes = [int(s) for s in sys.argv[1:]] or [1, 16, 64, 256]
    torch.cuda.set_device(0)
    comm = pycomm.Communicator.from_env()
    n, r = comm.size, comm.rank
    comm.barrier()
    copy = copy_bandwidth() if r == 0 else 0.0
    comm.barrier()
    rows = []
    for compress in (None, "int8"):
        for mib in sizes:
            x = torch.randn(mib << 18, device="cuda")
            y = torch.empty_like(x)  # out of place, as nccl-tests: x stays the same
            iters = max(5, min(50, (1 << 30) // (mib << 20)))
            for _ in range(3):
                comm.allreduce(x, compress=compress, out=y)
            runs = []
            for _ in range(3):
                torch.cuda.synchronize()
                comm.barrier()
                t0 = time.perf_counter()
                for _ in range(iters):
                    comm.allreduce(x, compress=compress, out=y)
                torch.cuda.synchronize()
                t = np.array([(time.perf_counter() - t0) / iters])
                comm.allreduce(t, op="max")  # the slowest rank
                runs.append(float(t[0]))
            best = min(runs)
            algbw = (mib << 20) / best / 1e9
            rows.append((compress or "float32", mib, best * 1e6, algbw, algbw * 2 * (n - 1) / n))
            torch.cuda.synchronize()
            del x, y
    if r == 0:
        print(f"# pycomm GPU allreduce, {n} ranks on {torch.cuda.get_device_name(0)}; {comm.device_path}")
        print(f"# device-to-device copy bandwidth (read + written): {copy:.0f} GB/s")
        print("| wire | size (MiB) | time (us) | algbw (GB/s) | busbw (GB/s) | busbw / copy bw |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for wire, mib, us, alg, bus in rows:
            print(f"| {wire} | {mib} | {us:.0f} | {alg:.1f} | {bus:.1f} | {bus / copy:.1%} |")
    comm.close()


if __name__ == "__main__":
    main()
