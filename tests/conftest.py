import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
RANKS = os.path.join(HERE, "ranks")


def run_ranks(n, script, *args, env=None, timeout=240, expect_ok=True):
    """Runs tests/ranks/<script> on n local ranks through pycomm.launch.

    Returns the CompletedProcess; fails the test with the ranks' output when the
    exit status is not what `expect_ok` says.
    """
    full_env = dict(os.environ)
    full_env.update(env or {})
    cmd = [sys.executable, "-m", "pycomm.launch", "-n", str(n), "--timeout", str(timeout),
           os.path.join(RANKS, script), *map(str, args)]
    proc = subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=timeout + 30)
    if (proc.returncode == 0) != expect_ok:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-6000:]}"
                    f"\n--- stderr\n{proc.stderr[-6000:]}")
    return proc


@pytest.fixture
def ranks():
    return run_ranks
