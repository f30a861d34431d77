"""A few ops, for the PYCOMM_DEBUG test (test_log.py reads the stderr lines)."""
import numpy as np

from common import comm_from_env

with comm_from_env(name="logged") as comm:
    comm.allreduce(np.ones(10, np.float32))
    comm.allreduce(np.ones(100, np.float32), op="avg", compress="int8")
    comm.barrier()
    comm.broadcast(np.ones(3, np.int32), root=1).copy()
