"""pycomm.bench: the pieces in-process, then the CLI end to end on 2 ranks (small sizes)."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from pycomm.bench import cli, data, report, runner

HAVE_TORCH = importlib.util.find_spec("torch") is not None
HAVE_MPI = importlib.util.find_spec("mpi4py") is not None and shutil.which("mpirun") is not None
BUSBW = {"allreduce": lambda n: 2 * (n - 1) / n, "reduce_scatter": lambda n: (n - 1) / n,
         "allgather": lambda n: (n - 1) / n, "broadcast": lambda n: 1.0, "reduce": lambda n: 1.0,
         "gather": lambda n: (n - 1) / n, "scatter": lambda n: (n - 1) / n, "alltoall": lambda n: (n - 1) / n,
         "sendrecv": lambda n: 2.0}  # nccl-tests' factors; sendrecv: a ping-pong, bytes / (time / 2)
ITEMSIZE = {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2, "int8": 1, "uint8": 1, "int32": 4, "int64": 8}
KEYS = {"op", "bytes", "count", "dtype", "redop", "nranks", "time_us", "algbw_GBps", "busbw_GBps",
        "wrong", "library", "transport", "p99_us"}


# -- pieces -------------------------------------------------------------------

def test_sizes_parse_and_sweep():
    assert [cli.parse_size(s) for s in ("8", "64K", "256M", "1G", "4kb")] == [8, 64 << 10, 256 << 20, 1 << 30, 4096]
    assert cli.sizes(8, 64 << 20, 8)[-2:] == [16 << 20, 64 << 20]  # the end size is always measured
    assert cli.sizes(8, 8, 4) == [8]


def test_plan_follows_nccl_tests():
    # allgather: bytes = whole output, count = per rank; reduce_scatter: bytes = whole input.
    assert runner.plan("allgather", 64, 4, 2) == runner.Plan(64, 8, 8, 16)
    assert runner.plan("reduce_scatter", 64, 4, 2) == runner.Plan(64, 8, 16, 8)
    assert runner.plan("allreduce", 10, 4, 2) == runner.Plan(8, 2, 2, 2)
    assert runner.plan("allgather", 4, 4, 2) is None  # less than one element per rank


@pytest.mark.parametrize("dtype,redop", [(d, o) for d in data.DTYPES for o in data.REDOPS
                                          if o != "avg" or d in data.FLOATS])  # avg: floats only
def test_check_accepts_right_and_counts_wrong(dtype, redop):
    n, count = 3, 1000
    spec = data.DataSpec(dtype, redop, n, seed=7)
    for rank in range(n):
        off = rank * count
        xs = [data.to_reference(spec.inputs(r, off, off + count), dtype) for r in range(n)]
        ref, _ = spec.reduce(xs)
        out = data.to_storage(ref, dtype)
        assert data.check("reduce_scatter", spec, rank, out, count) == 0
        out[[3, 500]] = data.to_storage(ref[[3, 500]] + (4 if dtype in data.FLOATS else 1), dtype)
        assert data.check("reduce_scatter", spec, rank, out, count) == 2


def test_check_gather_and_broadcast():
    n, count = 2, 300
    spec = data.DataSpec("float16", "none", n)
    gathered = np.concatenate([spec.inputs(r, 0, count) for r in range(n)])
    assert data.check("allgather", spec, 1, gathered, count) == 0
    assert data.check("broadcast", spec, 1, gathered[:count], count) == 0
    assert data.check("broadcast", spec, 1, gathered[count:], count) == count - np.count_nonzero(
        gathered[count:] == gathered[:count])


def test_check_rooted_alltoall_sendrecv():
    n, count = 3, 200
    spec = data.DataSpec("int32", "none", n)
    whole = [spec.inputs(r, 0, n * count) for r in range(n)]  # each rank's send buffer of n blocks
    for rank in range(n):
        a2a = np.concatenate([whole[p][rank * count:(rank + 1) * count] for p in range(n)])
        assert data.check("alltoall", spec, rank, a2a, count) == 0
        assert data.check("scatter", spec, rank, whole[0][rank * count:(rank + 1) * count], count) == 0
        bad = a2a.copy()
        bad[count + 5] += 1
        assert data.check("alltoall", spec, rank, bad, count) == 1
        assert data.check("scatter", spec, rank, whole[1][rank * count:(rank + 1) * count], count) > 0
    gathered = np.concatenate([spec.inputs(r, 0, count) for r in range(n)])
    assert data.check("gather", spec, 0, gathered, count) == 0
    assert data.check("gather", spec, 1, np.zeros(0, np.int32), count) == 0  # no output off the root
    assert data.check("sendrecv", spec, 0, spec.inputs(1, 0, count), count) == 0
    assert data.check("sendrecv", spec, 1, spec.inputs(1, 0, count), count) > 0
    assert data.check("sendrecv", spec, 2, np.zeros(count, np.int32), count) == 0  # the odd one out idles


def test_inputs_are_the_same_slice_by_slice():
    spec = data.DataSpec("int32", "sum", 2)
    whole = spec.inputs(1, 0, 3 * data.GEN_CHUNK)
    assert np.array_equal(whole[data.GEN_CHUNK - 5:data.GEN_CHUNK + 5],
                          spec.inputs(1, data.GEN_CHUNK - 5, data.GEN_CHUNK + 5))
    assert not np.array_equal(whole[:100], spec.inputs(0, 0, 100))  # ranks differ


def test_table_without_check_says_na():
    row = dict(op="allreduce", bytes=8, count=2, dtype="float32", redop="sum", nranks=2, time_us=1.5,
               algbw_GBps=0.005, busbw_GBps=0.005, p99_us=2.0, wrong=None, library="pycomm",
               transport="shm", version="0")
    other = dict(row, library="gloo", time_us=3.0)
    lines = report.table([row, other], "pycomm", ["gloo"])
    assert lines[-1].split()[7] == "N/A" and lines[-1].split()[-1] == "2.00"


def test_rounds_merge_at_the_median_round():
    row = dict(op="alltoall", bytes=64, count=8, dtype="float32", redop="none", nranks=2, p99_us=9.0,
               wrong=0, library="pycomm", transport="shm", version="0")
    mine = [dict(row, round=k, time_us=t, p99_us=t + 1) for k, t in enumerate([5.0, 1.0, 3.0, 2.0])]
    theirs = [dict(row, library="mpi", round=k, time_us=t) for k, t in enumerate([10.0, 3.0, 3.0, 8.0])]
    theirs[3]["wrong"] = 2  # a wrong result in any round is reported
    merged = {r["library"]: r for r in report.merge_rounds(mine + theirs)}
    # The lower median, all its columns from that one round.
    assert merged["pycomm"]["time_us"] == 2.0 and merged["pycomm"]["p99_us"] == 3.0
    assert merged["pycomm"]["rounds_us"] == [5.0, 1.0, 3.0, 2.0]
    assert merged["mpi"]["time_us"] == 3.0 and merged["mpi"]["wrong"] == 2
    # Ratios pair each round's measurements: 10/5, 3/1, 3/3, 8/2.
    assert report.round_ratios(mine + theirs, "pycomm", ["mpi"]) == \
        ["# ratio by round, 64 B: mpi 2.00 3.00 1.00 4.00 (median 2.00)"]
    single = [dict(row, round=0, time_us=1.0)]
    assert report.merge_rounds(single) == single


# -- the CLI ----------------------------------------------------------------------

def bench(*args, launcher=(), timeout=90):
    cmd = [*launcher, sys.executable, "-m", "pycomm.bench", *args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


def load(path):
    with open(path) as f:
        rows = json.load(f)
    assert isinstance(rows, list) and rows
    for r in rows:
        assert KEYS <= set(r), r
    return rows


def check_rows(rows, op, n=2, dtype="float32"):
    for r in rows:
        assert (r["op"], r["nranks"], r["dtype"]) == (op, n, dtype)
        assert r["wrong"] == 0
        assert r["algbw_GBps"] == pytest.approx(r["bytes"] / r["time_us"] / 1e3)
        assert r["busbw_GBps"] == pytest.approx(r["algbw_GBps"] * BUSBW[op](n))
        per_rank = n if op in ("allgather", "reduce_scatter", "gather", "scatter", "alltoall") else 1
        assert r["bytes"] == r["count"] * ITEMSIZE[dtype] * per_rank
        assert r["p99_us"] >= r["time_us"] > 0


@pytest.mark.parametrize("op", ["allreduce", "reduce_scatter", "allgather", "broadcast", "reduce", "gather",
                                "scatter", "alltoall", "sendrecv"])
def test_cli_two_ranks(op, tmp_path):
    out = tmp_path / "rows.json"
    text = bench(op, "-n", "2", "-b", "8", "-e", "64K", "-f", "8", "--check", "--json", str(out),
                 "--iters", "20", "--warmup", "2", "--timeout", "60")
    rows = load(out)
    assert [r["bytes"] for r in rows] == [8, 64, 512, 4096, 32768, 65536]
    assert {r["library"] for r in rows} == {"pycomm"}
    check_rows(rows, op)
    assert "# Out of bounds values : pycomm 0 OK" in text


@pytest.mark.parametrize("op", ["allreduce", "reduce_scatter", "allgather"])
def test_compressed_next_to_float32(op, tmp_path):
    out = tmp_path / "rows.json"
    text = bench(op, "--compress", "int8", "-n", "2", "-b", "8", "-e", "256K", "-f", "8", "--check",
                 "--compare", "pycomm", "--json", str(out), "--iters", "5", "--warmup", "1",
                 "--timeout", "60")
    rows = load(out)
    assert sorted({r["library"] for r in rows}) == ["pycomm", "pycomm-int8"]
    check_rows(rows, op)
    lossy = [r for r in rows if r["library"] == "pycomm-int8"]
    # The error columns: bounded, and not zero (it is measured, not assumed).
    assert all(0 < r["rms_err"] <= 0.01 and r["rms_err"] <= r["max_err"] < 0.05 for r in lossy if r["count"] >= 64)
    assert "maxerr" in text and "rmserr" in text and "pycomm-int8 0 OK, pycomm 0 OK" in text


@pytest.mark.parametrize("argv", [["broadcast"], ["allreduce", "-o", "max"], ["allgather", "-d", "float16"]])
def test_compress_needs_float_sum(capsys, argv):
    with pytest.raises(SystemExit):
        cli.main([*argv, "--compress", "int8"])
    assert "--compress int8 measures" in capsys.readouterr().err


def test_kernels_table(capsys):
    assert cli.main(["kernels", "-e", "64K", "--iters", "2"]) == 0
    text = capsys.readouterr().out
    for name in ("memcpy", "quantize + error feedback", "dequantize-accumulate", "reduce-requantize"):
        assert f"| {name}" in text
    rows = [line for line in text.splitlines() if line.startswith("| quantize |")]
    assert rows and all(float(c) > 0 for c in rows[0].strip("|").split("|")[1:])


@pytest.mark.skipif(not HAVE_TORCH, reason="torch is not installed")
def test_compare_gloo_bfloat16(tmp_path):
    out = tmp_path / "rows.json"
    text = bench("allreduce", "-n", "2", "-b", "8", "-e", "4K", "-f", "8", "-d", "bfloat16", "--check",
                 "--compare", "gloo", "--json", str(out), "--iters", "10", "--warmup", "1", "--timeout", "60")
    rows = load(out)
    assert sorted({r["library"] for r in rows}) == ["gloo", "pycomm"]
    check_rows(rows, "allreduce", dtype="bfloat16")
    assert "ratio" in text and "gloo 0 OK" in text


@pytest.mark.skipif(not HAVE_MPI, reason="mpi4py or mpirun missing")
def test_compare_mpi_from_launcher(tmp_path):
    out = tmp_path / "rows.json"
    bench("reduce_scatter", "-n", "2", "-b", "8", "-e", "4K", "-f", "8", "-d", "int32", "-o", "max",
          "--check", "--compare", "mpi", "--json", str(out), "--iters", "10", "--warmup", "1", "--timeout", "60")
    rows = load(out)
    assert sorted({r["library"] for r in rows}) == ["mpi", "pycomm"]
    check_rows(rows, "reduce_scatter", dtype="int32")


@pytest.mark.skipif(not HAVE_MPI, reason="mpi4py or mpirun missing")
def test_under_mpirun_both_libraries(tmp_path):
    out = tmp_path / "rows.json"
    root = ["--allow-run-as-root"] if os.geteuid() == 0 else []
    text = bench("allgather", "-b", "8", "-e", "4K", "-f", "8", "--check", "--compare", "mpi",
                 "--json", str(out), "--iters", "10", "--warmup", "1",
                 launcher=["mpirun", *root, "--oversubscribe", "-n", "2"])
    rows = load(out)
    assert sorted({r["library"] for r in rows}) == ["mpi", "pycomm"]
    check_rows(rows, "allgather")
    assert text.count("# pycomm.bench") == 1  # only rank 0 prints


@pytest.mark.skipif(not (HAVE_MPI and HAVE_TORCH), reason="mpi4py, mpirun or torch missing")
def test_rounds_take_turns_in_one_mpirun_job(tmp_path):
    out = tmp_path / "rows.json"
    text = bench("alltoall", "-n", "2", "-b", "64", "-e", "4K", "-f", "8", "--check", "--compare", "mpi,gloo",
                 "--rounds", "3", "--json", str(out), "--iters", "5", "--warmup", "1", "--timeout", "120",
                 timeout=150)
    rows = load(out)
    assert sorted((r["library"], r["bytes"]) for r in rows) == \
        [(lib, b) for lib in ("gloo", "mpi", "pycomm") for b in (64, 512, 4096)]
    check_rows(rows, "alltoall")
    assert all(len(r["rounds_us"]) == 3 and r["time_us"] in r["rounds_us"] for r in rows)
    assert "at the median of 3 rounds" in text and "# ratio by round, 4096 B: mpi " in text
