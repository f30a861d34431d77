"""Command line: parse, then either launch the ranks or be one.

With -n, this process is a launcher: it runs the ranks through pycomm.launch
(pycomm and gloo, one after the other in the same ranks), then, if asked, the
MPI comparison as a separate `mpirun` job (MPI ranks must be started by
mpirun), never two at once; the ranks hand their rows back in a file and the
launcher prints the merged table. With --rounds R the libraries take turns R
times in one job (under mpirun when MPI is compared), so that each ratio
compares measurements seconds apart, not a job apart: this machine's speed
drifts 2-5x between minutes. Without -n, this process is a rank (started by
pycomm.launch, torchrun or mpirun) and rank 0 prints.
"""
import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

from pycomm.operations import OPERATIONS

from . import report
from .backends import BACKENDS, LIBRARIES, OPS, PycommInt8Backend
from .data import DTYPES, FLOATS, REDOPS, DataSpec
from .runner import sweep
from .world import World, under_mpirun

DEFAULT_TIMEOUT = 300.0  # seconds any rank waits for the others (store, collectives)


def parse_size(text):
    """'8', '64K', '256M', '1G' (binary multiples, like nccl-tests) -> bytes."""
    m = re.fullmatch(r"\s*(\d+)\s*([KMG]?)i?B?\s*", text, re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (expected e.g. 8, 64K, 256M, 1G)")
    return int(m.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30}[m.group(2).upper()]


def sizes(lo, hi, factor):
    """lo, lo*factor, ... while below hi, then hi itself (nccl-tests stops at the last step <= hi)."""
    out, s = [], lo
    while s < hi:
        out.append(s)
        s *= factor
    return out + [hi]


def _libraries(text):
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in LIBRARIES]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown library {', '.join(bad)}; choose from {', '.join(LIBRARIES)}")
    return names


def parser():
    p = argparse.ArgumentParser(
        prog="python -m pycomm.bench",
        description="Collective benchmark with nccl-tests columns, optionally against Open MPI and gloo.")
    p.add_argument("op", choices=OPS)
    p.add_argument("-n", "--nprocs", type=int, help="launch this many local ranks (else: be a rank)")
    p.add_argument("-b", "--minbytes", type=parse_size, default="8", help="first size (default 8)")
    p.add_argument("-e", "--maxbytes", type=parse_size, default="256M", help="last size (default 256M)")
    p.add_argument("-f", "--stepfactor", type=int, default=4, help="size multiplier per step (default 4)")
    p.add_argument("-d", "--datatype", choices=DTYPES, default="float32")
    p.add_argument("-o", "--redop", choices=REDOPS, default="sum",
                   help="reduction (allreduce, reduce_scatter)")
    p.add_argument("--iters", type=int, help="timed iterations per size (default: by size, %d..%d)" % (5, 1000))
    p.add_argument("--warmup", type=int, help="untimed iterations per size first (default: iters/10, 2..50)")
    p.add_argument("--check", action="store_true", help="verify results against a numpy reference")
    p.add_argument("--seed", type=int, default=0, help="input seed (default 0)")
    p.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    p.add_argument("--library", choices=LIBRARIES, default="pycomm", help="library measured (default pycomm)")
    p.add_argument("--compare", type=_libraries, default=[], metavar="LIBS",
                   help="comma-separated libraries to compare against: mpi, gloo, torch-pycomm")
    p.add_argument("--transport", choices=("auto", "shm", "tcp", "mpi"),
                   help="pycomm transport (default auto; mpi: under mpirun only)")
    p.add_argument("--compress", choices=("int8",),
                   help="measure pycomm's compressed collective (library pycomm-int8; float32; allreduce, "
                        "reduce_scatter (sum/avg) or allgather); "
                        "algbw counts the uncompressed bytes")
    p.add_argument("--block-size", type=int, default=64, help="int8 quantization block (default 64)")
    p.add_argument("--rounds", type=int, default=1,
                   help="the libraries take turns this many times in one job; each size is reported "
                        "at its median round (default 1)")
    p.add_argument("--timeout", type=float, help="with -n: stop everything after this many seconds")
    p.add_argument("--rows-out", help=argparse.SUPPRESS)  # launcher <-> ranks
    return p


def validate(p, args):
    if args.minbytes < 1 or args.maxbytes < args.minbytes:
        p.error("need 1 <= -b <= -e")
    if args.stepfactor < 2:
        p.error("-f must be at least 2")
    if args.redop == "avg" and args.datatype not in FLOATS:
        p.error("-o avg needs a floating-point type")
    if args.datatype == "bfloat16" and importlib.util.find_spec("torch") is None:
        p.error("-d bfloat16 needs torch (numpy has no bfloat16; pycomm takes bf16 tensors via DLPack)")
    if args.nprocs is not None and (args.nprocs < 1 or under_mpirun()):
        p.error("-n must be at least 1, and not given under mpirun (mpirun starts the ranks)")
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    for n in ("iters", "warmup"):
        if getattr(args, n) is not None and getattr(args, n) < (1 if n == "iters" else 0):
            p.error(f"--{n} is too small")
    if args.compress:
        if args.op not in PycommInt8Backend.OPS or args.datatype != "float32" \
                or (OPERATIONS[args.op]["reduces"] and args.redop not in ("sum", "avg")):
            p.error("--compress int8 measures allreduce, reduce_scatter (-o sum or avg) or allgather "
                    "of float32")
        if args.library == "pycomm":
            args.library = "pycomm-int8"
    args.libraries = list(dict.fromkeys([args.library, *args.compare]))


def spec_of(args, nranks):
    redop = args.redop if OPERATIONS.get(args.op, {}).get("reduces") else "none"
    return DataSpec(args.datatype, redop, nranks, args.seed)


def rank_args(args, libraries, rows_out):
    """argv for the ranks the launcher starts: the same run, for `libraries`."""
    argv = [args.op, "-b", str(args.minbytes), "-e", str(args.maxbytes), "-f", str(args.stepfactor),
            "-d", args.datatype, "-o", args.redop, "--seed", str(args.seed),
            "--library", libraries[0], "--rows-out", rows_out, "--rounds", str(args.rounds)]
    if libraries[1:]:
        argv += ["--compare", ",".join(libraries[1:])]
    if "pycomm-int8" in libraries:
        argv += ["--block-size", str(args.block_size)]
    for name in ("iters", "warmup", "transport"):
        if getattr(args, name) is not None:
            argv += [f"--{name}", str(getattr(args, name))]
    return argv + (["--check"] if args.check else [])


# -- being a rank -----------------------------------------------------------

def run_rank(args):
    world = World.detect(DEFAULT_TIMEOUT)
    spec = spec_of(args, world.size)
    rows, notes, libs = [], [], []
    for lib in args.libraries:
        why = BACKENDS[lib](world).unsupported(args.op, spec.dtype, spec.redop)
        if why:
            notes.append(f"skipping {lib}: {why}")
        else:
            libs.append(lib)
    for rnd in range(args.rounds):
        # Every other round in reverse, so that no library always follows the same one.
        for lib in libs if rnd % 2 == 0 else libs[::-1]:
            extra = {"block_size": args.block_size} if lib == "pycomm-int8" else {}
            backend = BACKENDS[lib](world, transport=args.transport, **extra)
            backend.setup()
            try:
                got = sweep(backend, args.op, sizes(args.minbytes, args.maxbytes, args.stepfactor), spec,
                            args.iters, args.warmup, args.check)
            finally:
                backend.teardown()
            rows += [dict(r, round=rnd) for r in got]
    world.close()
    if world.rank != 0:
        return 0
    if args.rows_out:  # the launcher prints, and judges the results
        with open(args.rows_out, "w") as f:
            json.dump({"rows": rows, "notes": notes}, f)
        return 0
    return finish(args, rows, notes, world.size)


# -- launching ranks ----------------------------------------------------------

def _mpi_missing():
    if importlib.util.find_spec("mpi4py") is None:
        return "mpi4py is not installed"
    if shutil.which("mpirun") is None:
        return "mpirun is not on PATH"
    return None


def _job(cmd, rows_out, what):
    """Runs one job of ranks, returns (rows, notes), or raises SystemExit when it fails."""
    try:
        code = cmd()
    except subprocess.TimeoutExpired:
        code = 124
    if code != 0 or not os.path.exists(rows_out):
        raise SystemExit(f"pycomm.bench: the {what} ranks failed (exit code {code})")
    with open(rows_out) as f:
        got = json.load(f)
    return got["rows"], got["notes"]


def run_launcher(args):
    from pycomm.launch import launch

    n, notes = args.nprocs, []
    local = [lib for lib in args.libraries if lib != "mpi"]
    use_mpi = "mpi" in args.libraries
    if use_mpi and _mpi_missing():
        notes.append(f"skipping mpi: {_mpi_missing()}")
        use_mpi = False
    rows = []
    if use_mpi and args.rounds > 1:  # turns within one job: every library in mpirun's ranks
        local, mpi_libs = [], args.libraries
    else:
        mpi_libs = ["mpi"]
    with tempfile.TemporaryDirectory(prefix="pycomm-bench-") as tmp:
        if local:  # pycomm, then gloo, in one set of ranks
            out = os.path.join(tmp, "local.json")
            argv = ["-m", "pycomm.bench", *rank_args(args, local, out)]
            got = _job(lambda: launch(n, argv, timeout=args.timeout), out, "launched")
            rows += got[0]
            notes += got[1]
        if use_mpi:  # after, never alongside: two jobs would share the 2 cores
            out = os.path.join(tmp, "mpi.json")
            root = ["--allow-run-as-root"] if os.geteuid() == 0 else []
            # --bind-to none: the other libraries' ranks are not pinned either.
            cmd = ["mpirun", *root, "--oversubscribe", "--bind-to", "none", "-n", str(n),
                   sys.executable, "-m", "pycomm.bench", *rank_args(args, mpi_libs, out)]
            env = dict(os.environ)
            for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):  # as pycomm.launch gives its ranks
                env.setdefault(var, "1")
            got = _job(lambda: subprocess.run(cmd, env=env, timeout=args.timeout).returncode, out, "mpirun")
            rows += got[0]
            notes += got[1]
    return finish(args, rows, notes, n)


# -- output ---------------------------------------------------------------------

def finish(args, rows, notes, nranks):
    """Prints the table (rank 0 / launcher), writes JSON; exit status 1 if any result was wrong."""
    spec = spec_of(args, nranks)
    by_round, rows = rows, report.merge_rounds(rows)
    iters = args.iters or "auto"
    warmup = args.warmup if args.warmup is not None else "auto"
    print(f"# pycomm.bench {args.op}: {nranks} ranks, type {spec.dtype}, redop {spec.redop}, "
          f"iters {iters}, warmup {warmup}, check {'on' if args.check else 'off'}, seed {args.seed}")
    print("# time: median over iterations of the slowest rank's time"
          + (f", at the median of {args.rounds} rounds" if args.rounds > 1 else "")
          + f"; ratio: {args.library} busbw / the other's")
    if rows:
        print(f"# {report.versions(rows, args.libraries)}")
    for note in notes:
        print(f"# {note}")
    if args.json:
        report.write_json(args.json, rows)
    if not rows:
        print("# nothing measured: every library was skipped, or no size holds an element per rank")
        return 1
    others = [lib for lib in args.libraries if lib != args.library]
    for line in report.table(rows, args.library, others):
        print(line)
    for line in report.summary(rows, args.libraries, args.check):
        print(line)
    if args.rounds > 1:
        for line in report.round_ratios(by_round, args.library, others):
            print(line)
    sys.stdout.flush()
    return 1 if any(r["wrong"] for r in rows) else 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["kernels"]:  # single-process kernel throughput
        from . import kernels
        return kernels.main(argv[1:])
    p = parser()
    args = p.parse_args(argv)
    validate(p, args)
    return run_launcher(args) if args.nprocs else run_rank(args)
