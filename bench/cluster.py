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

With --mpirun the ranks are Open MPI's instead (`Cluster.mpirun`): mpirun
runs inside host 0 and starts its daemons on the others through a launch
agent (in place of ssh) that enters the host's namespace. Each host also
gets a hostname of its own (a UTS namespace), an /etc/hosts naming every
host (`ip netns exec` mounts /etc/netns/<ns>/hosts), and a TMPDIR of its
own: with one hostname and one /tmp for all, Open MPI's daemons take the
other hosts for their own and the launch hangs.
"""
import argparse
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile

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
            shutil.rmtree(os.path.join("/etc/netns", ns), ignore_errors=True)
        self.made.clear()
        if self in _live:
            _live.remove(self)

    def rank_env(self, host, ranks_per_host):
        """What every rank on `host` gets in its environment, whoever launches it."""
        # pycomm settings given to this script reach every rank (mpirun passes on only what it is told to).
        e = {k: v for k, v in os.environ.items() if k.startswith("PYCOMM_") and k != "PYCOMM_STORE"}
        e.update(PYCOMM_HOST_ID=f"emulated-host-{host}", GLOO_SOCKET_IFNAME=self.IFNAME, OMP_NUM_THREADS="1")
        if self.hosts * ranks_per_host > (os.cpu_count() or 1):
            # Emulated hosts share this machine's cores: a rank that spins
            # while waiting takes them from the others.
            e["PYCOMM_SPIN_US"] = os.environ.get("PYCOMM_SPIN_US", "0")
        return e

    def mpirun(self, ranks_per_host, argv, mca=(), timeout=600):
        """Runs argv (a Python program and its arguments) under Open MPI's
        mpirun, ranks_per_host ranks on every host, MPI over TCP between
        hosts (and shared memory inside one); returns mpirun's
        CompletedProcess. mca: extra (name, value) MCA settings."""
        names = [f"host{i}" for i in range(self.hosts)]
        hosts_file = "127.0.0.1 localhost\n" + "".join(f"{self.address(i)} {n}\n" for i, n in enumerate(names))
        for ns in self.host_ns:
            os.makedirs(os.path.join("/etc/netns", ns), exist_ok=True)
            with open(os.path.join("/etc/netns", ns, "hosts"), "w") as f:
                f.write(hosts_file)
        with tempfile.TemporaryDirectory(prefix="pycomm-cluster-") as work:
            def enter(i):  # the command prefix that puts a process on host i
                tmp = os.path.join(work, f"tmp{i}")
                os.makedirs(tmp, exist_ok=True)
                env = [f"{k}={v}" for k, v in {**self.rank_env(i, ranks_per_host), "TMPDIR": tmp}.items()]
                return ["ip", "netns", "exec", self.host_ns[i], "unshare", "--uts", "env", *env]

            agent = os.path.join(work, "agent.sh")
            with open(agent, "w") as f:  # called like ssh: agent HOST COMMAND...
                f.write('#!/bin/sh\nhost="$1"; shift\ncase "$host" in\n')
                for i, n in enumerate(names):
                    f.write(f'  {n}) exec {shlex.join(enter(i))} sh -c "hostname {n}; $*" ;;\n')
                f.write('  *) echo "cluster agent: unknown host $host" >&2; exit 1 ;;\nesac\n')
            os.chmod(agent, 0o700)
            hostfile = os.path.join(work, "hostfile")
            with open(hostfile, "w") as f:
                f.write("".join(f"{n} slots={ranks_per_host}\n" for n in names))
            subnet = f"10.77.{self.subnet}.0/24"
            cmd = ["mpirun", "--hostfile", hostfile, "--prtemca", "plm_ssh_agent", agent,
                   "--prtemca", "oob_tcp_if_include", subnet, "--map-by", f"ppr:{ranks_per_host}:node",
                   "-np", str(self.hosts * ranks_per_host), "--bind-to", "none",
                   "--mca", "pml", "ob1", "--mca", "btl", "tcp,sm,self", "--mca", "btl_tcp_if_include", subnet,
                   "--mca", "oob_tcp_if_include", subnet, "-x", "PATH"]
            if os.geteuid() == 0:
                cmd.append("--allow-run-as-root")
            for name, value in mca:
                cmd += ["--mca", name, str(value)]
            cmd += [sys.executable, *argv]
            full = enter(0) + ["sh", "-c", f"hostname {names[0]}; exec {shlex.join(cmd)}"]
            try:
                return subprocess.run(full, capture_output=True, text=True, timeout=timeout)
            finally:  # daemons left by a launch that failed
                subprocess.run(["pkill", "-f", f"plm_ssh_agent {agent}"], capture_output=True)

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
                         MASTER_PORT=str(port), **self.rank_env(h, ranks_per_host))
                e.pop("PYCOMM_STORE", None)
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
    p.add_argument("--mpirun", action="store_true", help="launch the ranks with Open MPI's mpirun")
    p.add_argument("--mca", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="with --mpirun: an MCA setting (repeatable)")
    p.add_argument("program", nargs=argparse.REMAINDER, help="-- prog.py args")
    args = p.parse_args(argv)
    prog = args.program[1:] if args.program[:1] == ["--"] else args.program
    if not prog:
        p.error("give the program to run after --")
    why = available()
    if why:
        raise SystemExit(f"cluster: {why}")
    with Cluster(args.hosts, args.rate, args.delay) as c:
        if args.mpirun:
            proc = c.mpirun(args.ranks_per_host, prog, mca=args.mca)
            sys.stdout.write(proc.stdout)
            sys.stderr.write(proc.stderr)
            return proc.returncode
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
