"""Kill-and-shrink trials (issue 21): N trials of a rank SIGKILLed at a
random op of a mixed workload (tests/ranks/shrink.py); prints how many
survivors recovered through shrink(), the slowest time to fail and to
shrink, hangs, files left in /dev/shm, and whether the survivors' flight
records (written as their error reached Python) name the dead rank.

    python bench/shrink_trials.py [--trials 100] [--ranks 4] [--transport shm|tcp]
"""
import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from pycomm import flight  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RANKS = os.path.join(HERE, "..", "tests", "ranks")


def trial(n, transport, victim, kill_at):
    """Each rank's (exit code, stdout, stderr), whether one hung, and whether
    the survivors' flight records name the dead rank."""
    with tempfile.TemporaryDirectory(prefix="pycomm-shrink-") as tmp:
        env = {**os.environ, "WORLD_SIZE": str(n), "PYCOMM_STORE": f"file://{tmp}/store",
               "TEST_TRANSPORT": transport, "PYCOMM_FLIGHT_DIR": f"{tmp}/fr",
               "PYTHONPATH": os.pathsep.join([RANKS, os.environ.get("PYTHONPATH", "")])}
        procs = [subprocess.Popen([sys.executable, os.path.join(RANKS, "shrink.py"), str(victim), str(kill_at)],
                                  env={**env, "RANK": str(r)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for r in range(n)]
        outs, hung = [], False
        for p in procs:
            try:
                outs.append((p.wait(timeout=90), p.stdout.read(), p.stderr.read()))
            except subprocess.TimeoutExpired:
                hung = True
                p.kill()
                outs.append((None, "", "hung"))
        named = os.path.isdir(f"{tmp}/fr") and any(
            f"no dump from rank(s) [{victim}]" in line for line in flight.analyze(flight.load(f"{tmp}/fr")))
        return outs, hung, named


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--ranks", type=int, default=4)
    ap.add_argument("--transport", default="shm", choices=("shm", "tcp"))
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    before = {f for f in os.listdir("/dev/shm") if f.startswith("pycomm")}
    ok = hangs = named = 0
    fail_s, shrink_s, failures = [], [], []
    for t in range(a.trials):
        victim, kill_at = rng.randrange(a.ranks), rng.randrange(1, 40)
        outs, hung, by_records = trial(a.ranks, a.transport, victim, kill_at)
        hangs += hung
        named += by_records
        good = True
        for r, (code, out, err) in enumerate(outs):
            if r == victim:
                good &= code == -signal.SIGKILL
            elif code != 0 or "shrank to rank" not in out:
                good = False
                failures.append(f"trial {t} rank {r}: exit {code}: {err.strip().splitlines()[-1:] or out}")
            else:
                fail_s.append(float(out.split(" after ")[1].split()[0]))
                shrink_s.append(float(out.rsplit(" in ", 1)[1].split()[0]))
        ok += good
    left = {f for f in os.listdir("/dev/shm") if f.startswith("pycomm")} - before
    print(f"# {a.trials} trials, {a.ranks} ranks over {a.transport}: a random rank SIGKILLed before a random op")
    print(f"recovered by shrink: {ok} of {a.trials}; hangs: {hangs}; files left in /dev/shm: {len(left)}; "
          f"flight records naming the dead rank: {named} of {a.trials}")
    if fail_s:
        fail_s.sort()
        shrink_s.sort()
        print(f"survivor's error after the death: median {fail_s[len(fail_s) // 2] * 1e3:.1f} ms, "
              f"max {fail_s[-1] * 1e3:.1f} ms; shrink: median {shrink_s[len(shrink_s) // 2] * 1e3:.1f} ms, "
              f"max {shrink_s[-1] * 1e3:.1f} ms")
    for f in failures[:10]:
        print(f)
    return 0 if ok == named == a.trials and not hangs and not left else 1


if __name__ == "__main__":
    sys.exit(main())
