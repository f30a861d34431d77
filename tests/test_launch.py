"""pycomm.launch: spawning ranks, their environment, output, and failure handling."""
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pycomm
from pycomm import launch as launch_mod

# The directory that holds the pycomm package, so launched ranks can import it.
PKG_ROOT = str(Path(pycomm.__file__).resolve().parent.parent)


def _env(*extra_paths):
    path = os.pathsep.join([*map(str, extra_paths), PKG_ROOT, os.environ.get("PYTHONPATH", "")])
    return dict(os.environ, PYTHONPATH=path)


def _script(tmp_path, body, name="prog.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return str(path)


def _launcher(*args, env=None, timeout=20):
    return subprocess.run([sys.executable, "-m", "pycomm.launch", *args], env=env or _env(),
                          capture_output=True, text=True, timeout=timeout)


def test_env_and_prefixed_output(tmp_path):
    prog = _script(tmp_path, """
        import os, sys
        names = ["RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"]
        print(" ".join(f"{n}={os.environ[n]}" for n in names), sys.argv[1:])
        print("to stderr", file=sys.stderr)
        sys.stdout.write("no newline")
    """)
    result = _launcher("-n", "3", prog, "--flag", "x")
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    assert len(out) == 6 and all(line.startswith("[rank ") for line in out)
    ports = set()
    for rank in range(3):
        line = next(l for l in out if l.startswith(f"[rank {rank}] RANK="))
        fields = dict(f.split("=") for f in line.split()[2:8])
        assert fields["RANK"] == fields["LOCAL_RANK"] == str(rank)
        assert fields["WORLD_SIZE"] == fields["LOCAL_WORLD_SIZE"] == "3"
        assert fields["MASTER_ADDR"] == "127.0.0.1" and int(fields["MASTER_PORT"]) > 0
        ports.add(fields["MASTER_PORT"])
        assert line.endswith("['--flag', 'x']")
        assert f"[rank {rank}] no newline" in out
        assert f"[rank {rank}] to stderr" in result.stderr.splitlines()
    assert len(ports) == 1


def test_ranks_rendezvous_through_store_from_env(tmp_path):
    prog = _script(tmp_path, """
        import os
        from pycomm.store import store_from_env
        rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        with store_from_env(rank, size, timeout=10) as store:
            print(store.allgather("hello", rank, size, f"r{rank}".encode(), timeout=10))
            store.barrier("bye", rank, size, timeout=10)  # rank 0 serves the store: nobody may leave early
    """)
    result = _launcher("-n", "3", prog)
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.splitlines()) == [f"[rank {r}] [b'r0', b'r1', b'r2']" for r in range(3)]


def test_module_mode_and_explicit_port(tmp_path):
    _script(tmp_path, """
        import os, sys
        print(__name__, os.environ["MASTER_PORT"], sys.argv[1:])
    """, name="mymod.py")
    result = _launcher("-n", "2", "--master-port", "29123", "-m", "mymod", "a", "--b", env=_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.splitlines()) == [
        f"[rank {r}] __main__ 29123 ['a', '--b']" for r in range(2)
    ]


def test_failing_rank_stops_the_others(tmp_path):
    prog = _script(tmp_path, """
        import os, sys, time
        if os.environ["RANK"] == "1":
            time.sleep(0.2)
            sys.exit(3)
        time.sleep(600)
    """)
    start = time.monotonic()
    result = _launcher("-n", "3", prog)
    assert result.returncode == 3
    assert time.monotonic() - start < 10
    assert "rank 1 exited with code 3" in result.stderr


def test_rank_killed_by_signal(tmp_path):
    prog = _script(tmp_path, """
        import os, signal
        if os.environ["RANK"] == "0":
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    result = _launcher("-n", "2", prog)
    assert result.returncode == 128 + signal.SIGKILL
    assert "rank 0 was killed by SIGKILL" in result.stderr


def test_timeout(tmp_path):
    prog = _script(tmp_path, "import time; time.sleep(600)\n")
    result = _launcher("-n", "2", "--timeout", "0.5", prog)
    assert result.returncode == 124
    assert "timed out" in result.stderr


def test_sigint_is_forwarded(tmp_path):
    prog = _script(tmp_path, f"""
        import os, time
        open(os.path.join({str(tmp_path)!r}, "ready" + os.environ["RANK"]), "w").close()
        try:
            time.sleep(600)
        except KeyboardInterrupt:
            print("interrupted")
    """)
    proc = subprocess.Popen([sys.executable, "-m", "pycomm.launch", "-n", "2", prog], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while not all((tmp_path / f"ready{r}").exists() for r in range(2)):
            assert time.monotonic() < deadline, "ranks did not start"
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGINT
    assert sorted(out.splitlines()) == ["[rank 0] interrupted", "[rank 1] interrupted"]


def test_launch_function_kills_ranks_that_ignore_sigterm(tmp_path, monkeypatch, capfd):
    monkeypatch.setattr(launch_mod, "GRACE_SECONDS", 0.5)
    prog = _script(tmp_path, f"""
        import os, signal, sys, time
        ready = os.path.join({str(tmp_path)!r}, "ready")
        if os.environ["RANK"] == "0":
            while not os.path.exists(ready):
                time.sleep(0.01)
            sys.exit(5)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        open(ready, "w").close()
        time.sleep(600)
    """)
    start = time.monotonic()
    assert launch_mod.launch(2, [prog], env=_env(), timeout=20) == 5
    assert time.monotonic() - start < 10
    err = capfd.readouterr().err
    assert "rank 0 exited with code 5" in err and "killing 1 rank(s)" in err


def test_no_prefix(tmp_path, capfd):
    # One write(2) per rank: two ranks' print()s may interleave "plain" and
    # "\n" when Python runs unbuffered (seen once in CI as "plainplain").
    prog = _script(tmp_path, "import os\nos.write(1, b'plain\\n')\n")
    assert launch_mod.launch(2, [prog], env=_env(), prefix=False) == 0
    assert capfd.readouterr().out.splitlines() == ["plain", "plain"]
