"""PYCOMM_DEBUG: INFO names each communicator's transport, TRACE each op with
its sequence number; unset, pycomm says nothing."""
import re


def stderr_lines(ranks, level):
    env = {"PYCOMM_DEBUG": level} if level is not None else {"PYCOMM_DEBUG": ""}
    proc = ranks(2, "debug_log.py", env=env)
    return [line.split("] ", 1)[-1] for line in proc.stderr.splitlines()]


def test_trace(ranks):
    lines = stderr_lines(ranks, "TRACE")
    for r in (0, 1):
        assert any(line.startswith(f"pycomm INFO rank {r}/2 comm logged: transport shm, 2 ranks on 1 "
                                   "host(s), 2 on this one; one-step direct algorithms up to 32768")
                   for line in lines), lines
        ops = [line for line in lines if line.startswith(f"pycomm TRACE rank {r}/2 comm logged:")]
        assert [re.search(r"#(\d+) (\w+)", op).groups() for op in ops] == [
            ("0", "allreduce"), ("1", "allreduce"), ("2", "barrier"), ("3", "broadcast")]
        assert any("#0 allreduce float32 x 10 sum, direct" in op for op in ops), ops
        assert any("#1 allreduce float32 x 100 avg, int8 block 64, int8 two-shot" in op for op in ops), ops
        assert any("#2 barrier, dissemination" in op for op in ops), ops


def test_info_has_no_ops(ranks):
    lines = stderr_lines(ranks, "info")
    assert any("transport shm" in line for line in lines)
    assert not any("TRACE" in line for line in lines)


def test_silent_by_default(ranks):
    assert not any(line.startswith("pycomm ") for line in stderr_lines(ranks, None))


def test_unknown_level_warns(ranks):
    lines = stderr_lines(ranks, "LOUD")
    assert any("pycomm WARN PYCOMM_DEBUG='LOUD' is not one of WARN, INFO, TRACE; using WARN" in line
               for line in lines)
