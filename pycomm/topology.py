"""Where ranks live: host identity, and which transport and address to use.

Peers share a host when hostname and boot id agree (exchanged through the
bootstrap store), never guessed from LOCAL_WORLD_SIZE.
"""
import fcntl
import os
import socket
import struct

TRANSPORTS = ("auto", "shm", "tcp", "mpi")


def host_id() -> str:
    """Which host this rank runs on: hostname and boot id, or PYCOMM_HOST_ID
    where those lie (network namespaces or containers that share a kernel
    but not a network)."""
    override = os.environ.get("PYCOMM_HOST_ID")
    if override:
        return override
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    except OSError:
        boot = "no-boot-id"
    return f"{socket.gethostname()}/{boot}"


def choose_transport(requested, hosts) -> str:
    """requested: auto|shm|tcp|mpi (None: $PYCOMM_TRANSPORT, default auto).
    auto never picks mpi: pycomm's own transports are faster where they reach."""
    if requested is None:
        requested = os.environ.get("PYCOMM_TRANSPORT", "auto") or "auto"
    if requested not in TRANSPORTS:
        raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}, got {requested!r}")
    one_host = len(set(hosts)) == 1
    if requested == "shm" and not one_host:
        raise ValueError("transport 'shm' needs every rank on one host; ranks run on "
                         f"{len(set(hosts))} hosts")
    if requested == "auto":
        # Mixed placements use TCP throughout for now: one transport per communicator.
        return "shm" if one_host else "tcp"
    return requested


def interface_address(ifname: str) -> str:
    """IPv4 address of a network interface (like NCCL_SOCKET_IFNAME)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        packed = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", ifname.encode()[:15]))  # SIOCGIFADDR
    except OSError as e:
        raise ValueError(f"PYCOMM_SOCKET_IFNAME={ifname}: no IPv4 address on that interface ({e})") from None
    finally:
        s.close()
    return socket.inet_ntoa(packed[20:24])


def bind_address(store, hosts) -> str:
    """The address this rank listens on for TCP peers."""
    ifname = os.environ.get("PYCOMM_SOCKET_IFNAME")
    if ifname:
        return interface_address(ifname)
    local = getattr(store, "local_address", None)
    if callable(local):
        local = local()
    if local:
        return local  # the address the store was reached on routes to the other ranks
    if len(set(hosts)) == 1:
        return "127.0.0.1"
    return socket.gethostbyname(socket.gethostname())
