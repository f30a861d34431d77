"""The flight recorder's dumps, and their analysis.

Every communicator keeps its last PYCOMM_FLIGHT_RECORDER (default 2000, 0:
off) collectives natively (csrc/comm/flight_recorder.h): sequence number,
operation, dtype, count, reduction, root, and when each was queued, started
and ended, or its error. `comm.flight_record()` returns them;
`comm.dump_flight_record(path)` writes them; with PYCOMM_FLIGHT_DIR set every
live communicator of the process is written there when a pycomm error
(a timeout, a lost peer, a mismatch, an abort) reaches Python, and on
SIGUSR1 when PYCOMM_FLIGHT_SIGNAL=1.

A dump is the format torch's flight recorder analyzer reads (a pickled dict,
version "2.10", one file per rank named <prefix><rank>; prefix
"pycomm_<communicator name>_rank_"), so

    python -m torch.distributed.flight_recorder.fr_trace DIR -p pycomm_NAME_rank_
    python -m pycomm.flight DIR

both say which ranks did not join which op, or which calls differ; the
second needs no torch and reads every communicator's files in DIR.
"""
import argparse
import os
import pickle
import re
import signal
import sys
import threading
import time
import weakref

__all__ = ["dump", "dump_all", "load", "analyze", "main"]

VERSION = "2.10"  # the dump format of torch 2.13's flight recorder, which its analyzer reads
_live = weakref.WeakSet()  # every open Communicator of this process
_names = weakref.WeakKeyDictionary()  # comm -> (group name, global ranks), where a torch group says
_lock = threading.Lock()
_last_dump = 0.0

# pycomm's operation -> torch's collective name (one fr_trace accepts), and the
# input / output sizes torch records, as multiples of the op's count
# (0: no buffer, "n": size x count).
_TORCH = {"allreduce": ("all_reduce", 1, 1), "allreduce_int8": ("all_reduce", 1, 1),
          "reduce_scatter": ("_reduce_scatter_base", "n", 1), "reduce_scatter_int8": ("_reduce_scatter_base", "n", 1),
          "allgather": ("_all_gather_base", 1, "n"), "allgather_int8": ("_all_gather_base", 1, "n"),
          "broadcast": ("broadcast", 1, 1), "barrier": ("barrier", 0, 0), "reduce": ("reduce", 1, 1),
          "gather": ("gather", 1, "n"), "scatter": ("scatter", "n", 1), "alltoall": ("all_to_all_single", "n", "n"),
          "allgatherv": ("all_gather_v", 1, 1), "reduce_scatterv": ("reduce_scatter_v", 1, 1),
          "alltoallv": ("all_to_all_v_single", 1, 1)}
_DTYPES = {"float32": "Float", "float64": "Double", "float16": "Half", "bfloat16": "BFloat16",
           "int8": "Char", "uint8": "Byte", "int32": "Int", "int64": "Long"}


def register(comm):
    """Called by every Communicator: it is dumped with the others."""
    _live.add(comm)
    if os.environ.get("PYCOMM_FLIGHT_SIGNAL") == "1" and threading.current_thread() is threading.main_thread():
        if signal.getsignal(signal.SIGUSR1) is not _on_signal:
            signal.signal(signal.SIGUSR1, _on_signal)


def name_as(comm, group_name, global_ranks):
    """Records comm under a torch process group's name and its members'
    global ranks (files and pg_config then use them, as torch's own dumps)."""
    _names[comm] = (str(group_name), list(global_ranks))


def _identity(comm):
    """(group name, the members' global ranks, this rank's global rank)."""
    name, ranks = _names.get(comm, (str(comm.name), list(range(comm.size))))
    return name, ranks, ranks[comm.rank]


def file_name(comm):
    """<prefix><rank>: fr_trace takes the (global) rank from the digits after the prefix."""
    name, _, rank = _identity(comm)
    return f"pycomm_{re.sub(r'[^A-Za-z0-9_-]', '-', name)}_rank_{rank}"


def record(comm):
    """This communicator's dump: the dict torch's analyzer reads, plus
    pycomm's own entries (key "pycomm") for pycomm.flight."""
    entries = comm.flight_record()
    name, ranks, global_rank = _identity(comm)
    collectives = [e for e in entries if not e["p2p"]]
    torch_entries = []
    # Sends and receives stay in pycomm's part only: torch's analyzer matches
    # point-to-point records by NCCL's coalescing entries, which pycomm has none of.
    for e in collectives:
        op, into, outof = _TORCH[e["operation"]]
        insz, outsz = ([] if m == 0 else [[e["count"] * (comm.size if m == "n" else 1)]] for m in (into, outof))
        dt = [_DTYPES.get(e["dtype"], e["dtype"])]
        state = {"failed": "started"}.get(e["state"], e["state"])  # torch knows no failed: it did not complete
        torch_entries.append({
            "record_id": e["seq"], "pg_id": 0, "process_group": (name, "pycomm"),
            "collective_seq_id": e["seq"] + 1, "p2p_seq_id": 0, "op_id": e["seq"] + 1,
            "profiling_name": f"gloo:{op}",  # fr_trace knows backends by name; pycomm is none of them
            "time_created_ns": e["queued_ns"], "time_discovered_started_ns": e["started_ns"],
            "time_discovered_completed_ns": e["ended_ns"] if e["state"] == "completed" else None,
            "input_sizes": insz, "input_dtypes": dt if insz else [], "output_sizes": outsz,
            "output_dtypes": dt if outsz else [], "state": state, "retired": e["ended_ns"] is not None,
            "timeout_ms": int(comm.timeout * 1000), "is_p2p": False, "frames": []})
    return {"version": VERSION, "comm_lib_version": "pycomm",
            "pg_config": {name: {"name": name, "desc": "pycomm", "ranks": str(list(ranks))}},
            "pg_status": {name: {"last_enqueued_collective": max((e["seq"] + 1 for e in collectives), default=-1)}},
            "rank": global_rank, "entries": torch_entries,
            "pycomm": {"name": name, "rank": comm.rank, "size": comm.size, "entries": entries}}


def dump(comm, path=None):
    """Writes comm's record to `path` (a file), or into PYCOMM_FLIGHT_DIR;
    returns the file written."""
    if path is None:
        folder = os.environ.get("PYCOMM_FLIGHT_DIR")
        if not folder:
            raise ValueError("dump_flight_record needs a path or PYCOMM_FLIGHT_DIR")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, file_name(comm))
    data = record(comm)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        pickle.dump(data, f)
    os.replace(tmp, path)  # a reader never sees half a file
    return path


def dump_all():
    """Every live communicator's record into PYCOMM_FLIGHT_DIR (when set)."""
    if not os.environ.get("PYCOMM_FLIGHT_DIR"):
        return []
    written = []
    for comm in list(_live):
        try:
            written.append(dump(comm))
        except Exception:  # noqa: BLE001  a closed communicator, a full disk: the error in hand matters more
            pass
    return written


def on_error():
    """Called as a pycomm communication error reaches Python (bindings/errors.cpp):
    the records then, at most once a second (ops failing fast after the first)."""
    global _last_dump
    if not os.environ.get("PYCOMM_FLIGHT_DIR"):
        return
    with _lock:
        now = time.monotonic()
        if now - _last_dump < 1.0:
            return
        _last_dump = now
    dump_all()


def _on_signal(signum, frame):
    dump_all()


# -- analysis ----------------------------------------------------------------------

def load(folder):
    """{communicator name: {rank: pycomm entries}} from every dump in folder."""
    comms = {}
    for fname in sorted(os.listdir(folder)):
        if not fname.startswith("pycomm_") or fname.endswith(".tmp"):
            continue
        with open(os.path.join(folder, fname), "rb") as f:
            data = pickle.load(f)
        own = data["pycomm"]
        comms.setdefault(own["name"], {"size": own["size"], "ranks": {}})["ranks"][own["rank"]] = own["entries"]
    return comms


def _call(e):
    if e.get("p2p"):
        way = "to" if e["operation"] == "send" else "from"
        peer = "any rank" if e["peer"] == -1 else f"rank {e['peer']}"
        return f"{e['operation']} #{e['seq']} {way} {peer}, tag {e['tag']}, {e['dtype']} x {e['count']}"
    parts = [f"{e['operation']} #{e['seq']}", f"{e['dtype']} x {e['count']}"]
    if e.get("op"):
        parts.append(e["op"])
    if e.get("root") is not None:
        parts.append(f"root {e['root']}")
    if e.get("block_size"):
        parts.append(f"block {e['block_size']}")
    return ", ".join(parts)


def _key(e):
    return (e["operation"], e["dtype"], e["count"], e.get("op"), e.get("root"), e.get("block_size"))


def analyze(comms):
    """Lines saying, per communicator, the first op that not every rank
    completed: which ranks never reached it (or whose dumps are missing),
    which calls differ, and each rank's state in it."""
    lines = []
    for name, c in sorted(comms.items()):
        size, ranks = c["size"], c["ranks"]
        by_seq = {r: {e["seq"]: e for e in entries if not e.get("p2p")} for r, entries in ranks.items()}
        absent = sorted(set(range(size)) - set(ranks))
        seqs = sorted(set().union(*[set(s) for s in by_seq.values()])) if by_seq else []
        first = max((min(s) for s in by_seq.values() if s), default=0)  # older ops fell off some ring
        culprit = None
        for seq in seqs:
            if seq < first:
                continue
            have = {r: s[seq] for r, s in by_seq.items() if seq in s}
            calls = {}
            for r, e in sorted(have.items()):
                calls.setdefault(_key(e), []).append(r)
            if len(calls) > 1 or len(have) < len(by_seq) or any(e["state"] != "completed" for e in have.values()):
                culprit = (seq, have, calls)
                break
        head = f"communicator {name!r} ({size} ranks, dumps from {sorted(ranks)})"
        if absent:
            head += f"; no dump from rank(s) {absent}"
        p2p = _p2p_lines(ranks)
        if culprit is None:
            lines.append(f"{head}: every recorded {'collective ' if p2p else ''}op completed on every rank")
            lines += p2p
            continue
        seq, have, calls = culprit
        lines.append(f"{head}: op #{seq} did not complete everywhere")
        missing = sorted(set(by_seq) - set(have))
        if missing:
            last = {r: max(by_seq[r], default=None) for r in missing}
            lines.append(f"  ranks not joining op #{seq}: {missing} (their last recorded op: "
                         + ", ".join(f"rank {r} #{last[r]}" for r in missing) + ")")
        if len(calls) > 1:
            lines.append(f"  mismatched calls in op #{seq}:")
            for key, rs in calls.items():
                lines.append(f"    ranks {rs}: {_call(have[rs[0]])}")
        for r, e in sorted(have.items()):
            err = f": {e['error']}" if e.get("error") else ""
            lines.append(f"  rank {r}: {_call(e)}: {e['state']}{err}")
        lines += p2p
    return lines


def _p2p_lines(ranks):
    """The sends and receives that did not complete, and whether their peer
    posted the other side: messages between a pair with one tag match in
    order, so the k-th send from a to b with tag t meets b's k-th receive
    from a with tag t (where a receive names its source)."""
    p2p = {r: [e for e in entries if e.get("p2p")] for r, entries in ranks.items()}
    whole = {r: not es or es[0]["seq"] == 0 for r, es in p2p.items()}  # the ring kept every op

    def nth(r, e):  # e's place among r's ops of its kind, peer and tag
        return sum(1 for o in p2p[r] if o["seq"] < e["seq"] and _lane(o) == _lane(e))

    lines = []
    for r, es in sorted(p2p.items()):
        for e in es:
            if e["state"] == "completed":
                continue
            err = f": {e['error']}" if e.get("error") else ""
            lines.append(f"  rank {r}: {_call(e)}: {e['state']}{err}")
            peer = e["peer"]
            if peer == -1 or not whole[r]:
                continue
            if peer not in p2p:
                lines.append(f"    no dump from rank {peer}")
                continue
            if not whole[peer]:
                continue
            other = "recv" if e["operation"] == "send" else "send"
            k = nth(r, e)
            posted = sum(1 for o in p2p[peer] if (o["operation"], o["peer"], o["tag"]) == (other, r, e["tag"]))
            if posted <= k:
                lines.append(f"    rank {peer} posted no matching {other}: {posted} {other}(s) with rank {r} "
                             f"and tag {e['tag']}; this is {e['operation']} number {k + 1}")
    return lines


def _lane(e):
    return e["operation"], e["peer"], e["tag"]


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m pycomm.flight",
                                 description="Which ranks did not join which op, from pycomm's flight records.")
    ap.add_argument("folder", help="the PYCOMM_FLIGHT_DIR the ranks dumped to")
    a = ap.parse_args(argv)
    comms = load(a.folder)
    if not comms:
        print(f"no pycomm flight records in {a.folder}", file=sys.stderr)
        return 1
    print("\n".join(analyze(comms)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
