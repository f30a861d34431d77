"""The torch.distributed backend "pycomm" (pycomm/torch): registration, the
collectives through torch's API under each init method and torchrun, errors,
DDP against gloo, and the comm hooks. Multi-rank programs are tests/ranks/torch_*.py."""
import os
import socket
import subprocess
import sys

import pytest

from conftest import RANKS, run_ranks

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")


def test_registered_and_single_rank():
    import pycomm.torch

    assert "PYCOMM" in dist.Backend._plugins
    assert dist.Backend("pycomm") == "pycomm"
    dist.init_process_group("pycomm", store=dist.HashStore(), rank=0, world_size=1)
    try:
        pg = dist.group.WORLD
        assert isinstance(pg, pycomm.torch.ProcessGroupPycomm) and pg.comm.size == 1
        x = torch.arange(4.)
        dist.all_reduce(x, op=dist.ReduceOp.MAX)
        assert torch.equal(x, torch.arange(4.))
        w = dist.all_reduce(x, async_op=True)
        assert w.wait() and torch.equal(w.get_future().wait()[0], torch.arange(4.))
        with pytest.raises(ValueError):
            dist.all_reduce(x, op=dist.ReduceOp.BOR)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("n,overlap", [(2, "auto"), (3, "auto"), (2, "1"), (3, "1")])
def test_backend_env(n, overlap):
    # overlap "1": every all_reduce on pycomm's worker thread, completed by the group's completion thread
    out = run_ranks(n, "torch_backend.py", env={"PYCOMM_TORCH_OVERLAP": overlap}, timeout=120).stdout
    assert "torch backend ok" in out


@pytest.mark.parametrize("n", [2, 3, 4])
def test_native_ops(n):
    # send/recv to 256 MiB, batch_isend_irecv and coalescing, all_to_all(_single) even and uneven
    # (MoE routing, forward and backward), reduce/gather/scatter, uneven list all_gather and
    # reduce_scatter, PREMUL_SUM and AVG, the object collectives.
    out = run_ranks(n, "torch_native_ops.py", timeout=200).stdout
    assert f"torch native ops ok on {n} ranks" in out


@pytest.mark.parametrize("n", [2, 3, 4])
def test_moe_expert_parallel(n):
    # Top-1 MoE, tokens routed with all_to_all_single and uneven splits (a rank with none),
    # output and input/gate/expert gradients against the layer in one process.
    out = run_ranks(n, "torch_moe.py", timeout=120).stdout
    assert f"torch moe ok on {n} ranks" in out, out


@pytest.mark.parametrize("n", [2, 3, 4])
def test_fsdp_int8(n):
    # pycomm.torch.fsdp.compress: every all-gather is the int8 round trip of every rank's input,
    # identical on all ranks; reduce-scatters compressed; training within 3% of float32;
    # residuals restored from state_dict give the same step; refusals.
    out = run_ranks(n, "torch_fsdp_int8.py", timeout=180).stdout
    assert f"torch fsdp int8 ok on {n} ranks" in out, out


@pytest.mark.parametrize("n", [2, 4])
def test_pipeline_schedules(n):
    # GPipe, 1F1B, interleaved 1F1B; 32 MiB activations; losses and gradients against one process.
    out = run_ranks(n, "torch_pipeline.py", timeout=300).stdout
    for schedule in ("gpipe", "1f1b", "interleaved1f1b"):
        assert f"pipeline {schedule} ok on {n} ranks" in out, out


@pytest.mark.parametrize("n", [2, 4])
def test_fsdp2_matches_gloo(n):
    # fully_shard, 20 steps, fp32 and bf16 params / fp32 reduce, state_dict round trip; HSDP on 4 ranks.
    out = run_ranks(n, "torch_fsdp.py", timeout=200).stdout
    assert f"torch fsdp ok on {n} ranks" in out, out


@pytest.mark.parametrize("n", [2, 3, 4])
def test_dtensor_and_tensor_parallel(n):
    out = run_ranks(n, "torch_dtensor.py", timeout=200).stdout
    assert f"torch dtensor ok on {n} ranks" in out, out


@pytest.mark.parametrize("script,args", [("pipeline_step.py", ["--activation-mib", "1"]),
                                         ("fsdp_step.py", ["--width", "64", "--mp"]),
                                         ("fsdp_step.py", ["--width", "64", "--compress", "weights,grads",
                                                           "--loss-steps", "3"])])
def test_bench_step_scripts(script, args):
    # bench/pipeline_step.py and bench/fsdp_step.py end to end, small: both backends and the compute row print.
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cmd = [sys.executable, "-m", "pycomm.launch", "-n", "2", os.path.join(here, "bench", script),
           "--steps", "1", "--rounds", "1", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "x gloo" in proc.stdout and "compute" in proc.stdout, proc.stdout[-3000:]


@pytest.mark.parametrize("launcher", ["pycomm.launch", "torchrun"])
def test_pycomm_api_inside_a_torch_job(launcher):
    # Communicator.from_env() after init_process_group shares torch's store; pycomm.torch.communicator().
    if launcher == "pycomm.launch":
        out = run_ranks(3, "torch_and_pycomm.py", timeout=120).stdout
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               os.path.join(RANKS, "torch_and_pycomm.py")]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=150)
        assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
        out = proc.stdout
    assert "torch and pycomm ok" in out, out


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("scheme", ["tcp", "file"])
def test_backend_init_methods(scheme, tmp_path):
    url = f"tcp://127.0.0.1:{_free_port()}" if scheme == "tcp" else f"file://{tmp_path}/store"
    assert f"torch backend ok {url}" in run_ranks(2, "torch_backend.py", url, timeout=120).stdout


def test_torchrun():
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           os.path.join(RANKS, "torch_backend.py")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    assert "torch backend ok" in proc.stdout


def test_bench_torch_pycomm():
    cmd = [sys.executable, "-m", "pycomm.bench", "allreduce", "-n", "2", "-b", "8", "-e", "4K", "-f", "8",
           "--library", "torch-pycomm", "--check", "--iters", "5", "--warmup", "1", "--timeout", "60"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "torch-pycomm 0 OK" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.parametrize("extra", [[], ["--overlap", "--rounds", "2", "--bucket-view"]],
                         ids=["hooks", "overlap"])
def test_bench_ddp_step(extra):
    # bench/ddp_step.py end to end on a small model: every configuration prints a row.
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cmd = [sys.executable, "-m", "pycomm.launch", "-n", "2", os.path.join(here, "bench", "ddp_step.py"),
           "--width", "64", "--layers", "2", "--steps", "2", "--warmup", "1", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    names = (["pycomm, inline", "pycomm, overlapped"] if extra else
             ["pycomm + int8_hook", "pycomm + bf16_hook"])
    for name in ["gloo", *names]:
        assert f"[rank 0] {name} " in proc.stdout and "x gloo" in proc.stdout, proc.stdout[-3000:]


@pytest.mark.parametrize("n,steps,overlap", [(2, 150, "auto"), (3, 60, "auto"), (2, 100, "1")])
def test_ddp_matches_gloo_and_hooks(n, steps, overlap):
    env = {"DDP_STEPS": str(steps), "PYCOMM_TORCH_OVERLAP": overlap}
    out = run_ranks(n, "torch_ddp.py", env=env, timeout=150).stdout
    assert "ddp ok" in out, out


# A fixed subset of torch's own DistributedTest suite (tests/torch_suite/conformance.py;
# all of it: tests/torch_suite/run_all.sh, results in tests/torch_suite/CONFORMANCE.md).
# The second set runs with the suite selecting tests as for gloo (PYCOMM_AS_GLOO=1).
CONFORMANCE_SUBSET = ["test_all_reduce_sum_async", "test_send_recv_any_source", "test_DistributedDataParallelCPU"]
CONFORMANCE_AS_GLOO = ["test_accumulate_gradients_no_sync_allreduce_hook", "test_sparse_all_reduce_sum",
                       "test_barrier_timeout_full_group", "test_monitored_barrier_gloo_rank_0_timeout"]


@pytest.mark.parametrize("as_gloo", [False, True], ids=["as-pycomm", "as-gloo"])
def test_torch_conformance_subset(as_gloo):
    pytest.importorskip("expecttest")  # torch's test utilities import it (the "test" extra installs it)
    here = os.path.dirname(os.path.abspath(__file__))
    names = CONFORMANCE_AS_GLOO if as_gloo else CONFORMANCE_SUBSET
    ids = [f"{here}/torch_suite/conformance.py::TestPycommBackend::{name}" for name in names]
    env = dict(os.environ, BACKEND="pycomm", WORLD_SIZE="2", PYCOMM_AS_GLOO="1" if as_gloo else "0")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *ids],
                          env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, f"{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    assert f"{len(ids)} passed" in proc.stdout, proc.stdout[-2000:]


def test_work_pending_timeout_and_errors():
    from concurrent.futures import Future
    from datetime import timedelta

    import pycomm
    from pycomm.torch.work import Work

    pending = Future()
    w = Work([torch.ones(1)], pending=pending)
    assert not w.is_completed()
    with pytest.raises(pycomm.TimeoutError):
        w.wait(timedelta(seconds=0.05))
    fut = w.get_future()
    pending.set_exception(pycomm.PeerLostError("rank 1 went away"))
    with pytest.raises(pycomm.PeerLostError):
        fut.wait()
    with pytest.raises(pycomm.PeerLostError):
        w.wait()
    assert w.is_completed() and isinstance(w.exception(), pycomm.PeerLostError)
    done = Work([torch.ones(2)])
    assert done.wait() and done.is_success() and torch.equal(done.get_future().wait()[0], torch.ones(2))


@pytest.mark.parametrize("hook_name", ["fp16_hook", "bf16_hook", "int8_hook"])
def test_hooks_single_rank(hook_name):
    from torch.nn.parallel import DistributedDataParallel as DDP

    from pycomm.torch import hooks

    dist.init_process_group("pycomm", store=dist.HashStore(), rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        model = torch.nn.Linear(8, 4)
        ddp = DDP(model)
        state = hooks.Int8State(error_feedback=False) if hook_name == "int8_hook" else None
        ddp.register_comm_hook(state, getattr(hooks, hook_name))
        ddp(torch.randn(16, 8)).sum().backward()
        ref = torch.nn.Linear(8, 4)
        ref.load_state_dict(model.state_dict())
        torch.manual_seed(0)
        torch.nn.Linear(8, 4)  # the same random stream as above
        ref(torch.randn(16, 8)).sum().backward()
        bucket_max = max(q.grad.abs().max().item() for q in ref.parameters())
        for p, q in zip(model.parameters(), ref.parameters()):
            if hook_name == "int8_hook":  # two roundings of at most half a step (max / 127) each
                err = (p.grad - q.grad).abs().max().item()
                assert err <= bucket_max / 127 * 1.001, (err, bucket_max)
            else:
                assert torch.allclose(p.grad, q.grad, rtol=1e-2, atol=1e-3), (hook_name, p.grad, q.grad)
    finally:
        dist.destroy_process_group()
