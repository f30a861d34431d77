"""An emulated cluster on one machine: K hosts as Linux network namespaces,
each joined by a veth pair to a bridge in a namespace of its own, optionally
rate-limited (tc tbf) and delayed (netem), and ranks launched inside them.

    sudo python bench/cluster.py --hosts 3 --ranks-per-host 2 [--rate 1gbit] -- prog.py args
    with Cluster(hosts=4, rate="1gbit") as c:
        results = c.run(ranks_per_host=1, argv=["prog.py"])

Addresses live only inside these namespaces (10.77.<k>.0/24); nothing else is
contacted. Every namespace and link made here is removed on exit, on an
exception and on SIGINT/SIGTERM. Ranks get RANK, WORLD_SIZE, LOCAL_RANK,
LOCAL_WORLD_SIZE, MASTER_ADDR (host 0), MASTER_PORT, PYCOMM_HOST_ID (so
pycomm sees K hosts although they share a kernel) and GLOO_SOCKET_IFNAME.
Needs root and iproute2 (`ip netns`, `tc`).
"""
import argparse
import os
import secrets
import shutil
import signal
import subprocess
import sys

_live = []  # clusters to tear down on a signal


def available():
    """None when namespaces can be made here, else why not."""
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"{tool} (iproute2) is not installed"
    probe = f"pcprobe{secrets.token_hex(3)}"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if r.returncode != 0:
        return f"ip netns add failed: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _rate_bits(rate):
    """'1gbit', '500mbit', '5Gbit' -> bits per second."""
    text = rate.lower().removesuffix("bit").removesuffix("bps")
    scale = {"k": 10**3, "m": 10**6, "g": 10**9}.get(text[-1:], 1)
    return int(float(text.rstrip("kmg")) * scale)


def _sh(*cmd, ns=None):
    full = (["ip", "netns", "exec", ns] if ns else []) + list(cmd)
    r = subprocess.run(full, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(full)}: {r.stderr.strip()}")
    return r.stdout


class Cluster:
    IFNAME = "eth0"

    def __init__(self, hosts, rate=None, delay=None):
        if hosts < 1:
            raise ValueError("hosts must be at least 1")
        self.hosts, self.rate, self.delay = hosts, rate, delay
        self.tag = secrets.token_hex(3)
        self.subnet = 10 + secrets.randbelow(200)  # 10.77.<subnet>.0/24
        self.bridge_ns = f"pc{self.tag}br"
        self.host_ns = [f"pc{self.tag}h{i}" for i in range(hosts)]
        self.made = []  # namespaces, in creation order

    def address(self, i):
        return f"10.77.{self.subnet}.{i + 1}"

    def __enter__(self):
        _live.append(self)
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()

    def _build(self):
        _sh("ip", "netns", "add", self.bridge_ns)
        self.made.append(self.bridge_ns)
        _sh("ip", "link", "add", "br0", "type", "bridge", ns=self.bridge_ns)
        _sh("ip", "link", "set", "br0", "up", ns=self.bridge_ns)
        for i, ns in enumerate(self.host_ns):
            _sh("ip", "netns", "add", ns)
            self.made.append(ns)
            peer = f"v{self.tag}{i}"
            # The veth is created in the host namespace; its peer moves to the bridge.
            _sh("ip", "link", "add", self.IFNAME, "type", "veth", "peer", "name", peer, ns=ns)
            _sh("ip", "link", "set", peer, "netns", self.bridge_ns, ns=ns)
            _sh("ip", "link", "set", peer, "master", "br0", ns=self.bridge_ns)
            _sh("ip", "link", "set", peer, "up", ns=self.bridge_ns)
            _sh("ip", "addr", "add", f"{self.address(i)}/24", "dev", self.IFNAME, ns=ns)
            _sh("ip", "link", "set", self.IFNAME, "up", ns=ns)
            _sh("ip", "link", "set", "lo", "up", ns=ns)
            if self.rate or self.delay:
                self._shape(ns)

    def _shape(self, ns):
        # Egress of each host's link: netem (delay) with a tbf (rate) below it.
        if self.delay:
            _sh("tc", "qdisc", "add", "dev", self.IFNAME, "root", "handle", "1:", "netem",
                "delay", self.delay, ns=ns)
            parent = ["parent", "1:1", "handle", "10:"]
        else:
            parent = ["root", "handle", "10:"]
        if self.rate:
            # A bucket of 10 ms at the rate: smaller ones run below the rate
            # (the kernel refills it on timer ticks).
            burst = max(64 << 10, _rate_bits(self.rate) // 8 // 100)
            _sh("tc", "qdisc", "add", "dev", self.IFNAME, *parent, "tbf", "rate", self.rate,
                "burst", str(burst), "latency", "100ms", ns=ns)

    def close(self):
        for ns in reversed(self.made):  # deleting a namespace deletes its links
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self.made.clear()
        if self in _live:
            _live.remove(self)

    def run(self, ranks_per_host, argv, env=None, timeout=600, port=29511):
        """Runs argv (a Python program and its arguments) as ranks_per_host
        ranks on every host; returns [(rank, returncode, stdout, stderr)]."""
        world = self.hosts * ranks_per_host
        procs = []
        for h, ns in enumerate(self.host_ns):
            for local in range(ranks_per_host):
                rank = h * ranks_per_host + local
                e = dict(os.environ, **(env or {}))
                e.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(local),
                         LOCAL_WORLD_SIZE=str(ranks_per_host), MASTER_ADDR=self.address(0),
                         MASTER_PORT=str(port), PYCOMM_HOST_ID=f"emulated-host-{h}",
                         GLOO_SOCKET_IFNAME=self.IFNAME, OMP_NUM_THREADS="1")
                e.pop("PYCOMM_STORE", None)
                if world > (os.cpu_count() or 1):
                    # Emulated hosts share this machine's cores: a rank that
                    # spins while waiting takes them from the others.
                    e.setdefault("PYCOMM_SPIN_US", "0")
                cmd = ["ip", "netns", "exec", ns, sys.executable, *argv]
                procs.append((rank, subprocess.Popen(cmd, env=e, stdout=subprocess.PIPE,
                                                     stderr=subprocess.PIPE, text=True)))
        results = []
        try:
            for rank, p in procs:
                out, err = p.communicate(timeout=timeout)
                results.append((rank, p.returncode, out, err))
        finally:
            for _, p in procs:
                if p.poll() is None:
                    p.kill()
        return results


def _on_signal(signum, frame):
    for c in list(_live):
        c.close()
    raise SystemExit(128 + signum)


signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGINT, _on_signal)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hosts", type=int, default=3)
    p.add_argument("--ranks-per-host", type=int, default=1)
    p.add_argument("--rate", help="tc tbf rate per host link, e.g. 1gbit")
    p.add_argument("--delay", help="netem delay per host link, e.g. 100us")
    p.add_argument("program", nargs=argparse.REMAINDER, help="-- prog.py args")
    args = p.parse_args(argv)
    prog = args.program[1:] if args.program[:1] == ["--"] else args.program
    if not prog:
        p.error("give the program to run after --")
    why = available()
    if why:
        raise SystemExit(f"cluster: {why}")
    with Cluster(args.hosts, args.rate, args.delay) as c:
        results = c.run(args.ranks_per_host, prog)
    status = 0
    for rank, code, out, err in results:
        for line in out.splitlines():
            print(f"[rank {rank}] {line}")
        for line in err.splitlines():
            print(f"[rank {rank}] {line}", file=sys.stderr)
        status = status or code
    return status


if __name__ == "__main__":
    sys.exit(main())
