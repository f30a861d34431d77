"""torch's own distributed test suite (shipped in the wheel:
torch/testing/_internal/distributed/distributed_test.py) run against the
backend "pycomm".

    BACKEND=pycomm WORLD_SIZE=2 python -m pytest tests/torch/conformance.py [-k ...]
    bash tests/torch/run_all.sh            # everything, with a summary

The suite enables most CPU tests for a backend named in
DistTestCases.backend_feature["plugin"] / ["ddp"] / ["subgroup"]; this module
adds "pycomm" there before importing the suite (it reads BACKEND at import).
Not collected by the default test run (its name has no test_ prefix);
tests/test_torch.py runs a fixed subset of it. See CONFORMANCE.md.
"""
import os

os.environ.setdefault("BACKEND", "pycomm")
os.environ.setdefault("WORLD_SIZE", "2")

import pycomm.torch  # noqa: E402,F401  registers "pycomm" (also in each spawned rank: they import this module)
from torch.testing._internal.common_distributed import DistTestCases  # noqa: E402

for feature in ("plugin", "ddp", "subgroup"):
    DistTestCases.backend_feature[feature].add("pycomm")

from torch.testing._internal.common_utils import run_tests  # noqa: E402
from torch.testing._internal.distributed.distributed_test import (  # noqa: E402
    DistributedTest,
    TestDistBackend,
)


class TestPycommBackend(TestDistBackend, DistributedTest._DistTestBase):
    def setUp(self):
        super().setUp()
        self._spawn_processes()


if __name__ == "__main__":
    run_tests()
