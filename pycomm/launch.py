"""Runs N ranks of a Python program on this host.

    python -m pycomm.launch -n 4 train.py --lr 0.1
    python -m pycomm.launch -n 2 -m some.module args...

Each rank gets the variables torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK,
LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT), so `pycomm.store_from_env` and
torch's env:// rendezvous both work. Output lines are prefixed "[rank N] ".
If any rank fails, the others are stopped (SIGTERM, then SIGKILL after a grace
period) and the launcher exits with the failed rank's status.
"""
import argparse
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time

__all__ = ["launch", "main"]

GRACE_SECONDS = 5.0  # between SIGTERM and SIGKILL when stopping ranks


def _free_port(addr):
    family, _, _, _, sockaddr = socket.getaddrinfo(addr, 0, type=socket.SOCK_STREAM)[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind(sockaddr)
        return s.getsockname()[1]


def _exit_code(returncode):
    """The shell's convention: a rank killed by signal N exits 128+N."""
    return 128 - returncode if returncode < 0 else returncode


def _signal_name(signum):
    try:
        return signal.Signals(signum).name
    except ValueError:  # real-time signals have no name
        return f"signal {signum}"


def _describe(returncode):
    if returncode < 0:
        return f"was killed by {_signal_name(-returncode)}"
    return f"exited with code {returncode}"


class _Output:
    """Copies each rank's pipes to our stdout/stderr, one whole line at a time."""

    def __init__(self):
        self._lock = threading.Lock()  # keeps lines from different ranks from interleaving
        self.threads = []

    def pump(self, pipe, stream, tag):
        thread = threading.Thread(target=self._copy, args=(pipe, stream, tag), daemon=True)
        thread.start()
        self.threads.append(thread)

    def _copy(self, pipe, stream, tag):
        with pipe:
            for line in iter(pipe.readline, b""):
                try:
                    self.write(stream, tag + (line if line.endswith(b"\n") else line + b"\n"))
                except BrokenPipeError:
                    pass  # our reader left (`| head`); keep draining so the rank never blocks

    def write(self, stream, data):
        with self._lock:
            if hasattr(stream, "buffer"):
                stream.flush()
                stream.buffer.write(data)
                stream.buffer.flush()
            else:  # a text-only stream, e.g. when captured by a test harness
                stream.write(data.decode(errors="replace"))
                stream.flush()

    def log(self, message):
        self.write(sys.stderr, f"pycomm.launch: {message}\n".encode())


def launch(nprocs, argv, env=None, timeout=None, prefix=True, master_addr="127.0.0.1", master_port=0) -> int:
    """Runs `python argv...` as `nprocs` ranks and returns the launcher's exit code.

    `argv` is what follows the interpreter: ["prog.py", ...] or ["-m", "module", ...].
    `env` is the base environment (default os.environ). `timeout` (seconds)
    stops all ranks and returns 124 when it passes. `master_port=0` picks a free port.
    """
    base = dict(os.environ if env is None else env)
    # Rendezvous must go through the MASTER_* we set here, not a torchrun agent we may be running under.
    base.pop("TORCHELASTIC_USE_AGENT_STORE", None)
    if nprocs > 1:
        # Like torchrun: one math thread per rank. Idle OpenBLAS/OpenMP threads
        # spin, and N ranks x N threads on N cores starve the ranks themselves.
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            base.setdefault(var, "1")
    if prefix:
        base.setdefault("PYTHONUNBUFFERED", "1")  # else a rank's output reaches its pipe only on exit
    port = master_port or _free_port(master_addr)
    output = _Output()
    events = queue.SimpleQueue()  # (rank, returncode) or ("signal", signum); safe to put from a signal handler
    procs = []

    def on_signal(signum, frame):
        events.put(("signal", signum))

    handled = (signal.SIGINT, signal.SIGTERM)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {s: signal.signal(s, on_signal) for s in handled}
    try:
        for rank in range(nprocs):
            rank_env = dict(base, RANK=str(rank), WORLD_SIZE=str(nprocs), LOCAL_RANK=str(rank),
                            LOCAL_WORLD_SIZE=str(nprocs), MASTER_ADDR=master_addr, MASTER_PORT=str(port))
            pipe = subprocess.PIPE if prefix else None
            proc = subprocess.Popen(
                [sys.executable, *argv], env=rank_env, stdout=pipe, stderr=pipe,
                stdin=None if rank == 0 else subprocess.DEVNULL,  # like mpirun: only rank 0 reads stdin
                start_new_session=True,  # own process group: stopping a rank stops whatever it spawned
            )
            procs.append(proc)
            if prefix:
                tag = f"[rank {rank}] ".encode()
                output.pump(proc.stdout, sys.stdout, tag)
                output.pump(proc.stderr, sys.stderr, tag)
            threading.Thread(target=lambda r=rank, p=proc: events.put((r, p.wait())), daemon=True).start()

        running = set(range(nprocs))
        code, stop_signal = _supervise(events, running, timeout, output)
        _stop(procs, events, running, stop_signal, output)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if any(p.returncode is None for p in procs):  # we are unwinding from an error of our own
            _signal_all(procs, signal.SIGKILL)
    for thread in output.threads:
        thread.join(1.0)  # a rank's orphaned child may still hold the pipe open; don't wait on it forever
    return code


def _supervise(events, running, timeout, output):
    """Waits until every rank succeeds, one fails, we are signalled, or time runs out.

    Removes ranks from `running` as they exit. Returns the exit code and the
    signal with which to stop the ranks still running.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while running:
        try:
            what, value = events.get(timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            output.log(f"timed out after {timeout:g}s; stopping all ranks")
            return 124, signal.SIGTERM
        if what == "signal":
            output.log(f"received {_signal_name(value)}; forwarding it to the ranks")
            return 128 + value, value
        running.discard(what)
        if value != 0:
            others = f"; stopping {len(running)} other rank(s)" if running else ""
            output.log(f"rank {what} {_describe(value)}{others}")
            return _exit_code(value), signal.SIGTERM
    return 0, None


def _signal_all(procs, signum):
    for proc in procs:
        if proc.returncode is None:
            try:
                os.killpg(proc.pid, signum)
            except ProcessLookupError:
                pass  # exited since we looked


def _stop(procs, events, running, signum, output):
    """Sends `signum` to the ranks still running, then SIGKILL after GRACE_SECONDS or at a second signal."""
    for sig in (signum, signal.SIGKILL):
        if not running:
            return
        if sig == signal.SIGKILL:
            output.log(f"killing {len(running)} rank(s) that did not exit")
        _signal_all(procs, sig)
        deadline = time.monotonic() + GRACE_SECONDS
        while running:
            try:
                what, _ = events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if what == "signal":  # impatient user: go straight to SIGKILL
                break
            running.discard(what)
    if running:
        output.log(f"rank(s) {sorted(running)} did not exit even after SIGKILL")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pycomm.launch",
        description="Run N ranks of a Python program on this host.",
    )
    parser.add_argument("-n", "--nprocs", type=int, required=True, help="number of ranks")
    parser.add_argument("-m", "--module", action="store_true", help="run `program` as a module, like python -m")
    parser.add_argument("--master-addr", default="127.0.0.1", help="address rank 0's store binds (default %(default)s)")
    parser.add_argument("--master-port", type=int, default=0, help="store port (default: a free one)")
    parser.add_argument("--timeout", type=float, help="stop all ranks after this many seconds and fail")
    parser.add_argument("--no-prefix", dest="prefix", action="store_false", help="don't prefix output with the rank")
    parser.add_argument("program", help="script to run (a module name with -m)")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the program")
    args = parser.parse_args(argv)
    if args.nprocs < 1:
        parser.error("-n must be at least 1")
    command = ["-m", args.program, *args.args] if args.module else [args.program, *args.args]
    return launch(args.nprocs, command, timeout=args.timeout, prefix=args.prefix,
                  master_addr=args.master_addr, master_port=args.master_port)


if __name__ == "__main__":
    sys.exit(main())
