"""pycomm's own API inside a torch job: Communicator.from_env() after
dist.init_process_group (torch's TCPStore holds MASTER_PORT: pycomm shares
torch's store), and pycomm.torch.communicator() under a "pycomm" group."""
import numpy as np
import torch
import torch.distributed as dist

import pycomm
import pycomm.torch


def main():
    dist.init_process_group("gloo")
    r, n = dist.get_rank(), dist.get_world_size()
    comm = pycomm.Communicator.from_env(timeout=60)
    assert (comm.rank, comm.size) == (r, n)
    x = np.full(5, r + 1, np.float32)
    comm.allreduce(x)
    assert np.all(x == n * (n + 1) / 2), x
    try:
        pycomm.torch.communicator()
    except TypeError as e:
        assert "'gloo'" in str(e) or "gloo" in str(e), e
    else:
        raise AssertionError("communicator() of a gloo group")
    g = dist.new_group(backend="pycomm")
    c = pycomm.torch.communicator(g)
    assert c.size == n
    t = torch.full((4096,), float(r + 1))
    c.allreduce(t, compress="int8")
    assert torch.allclose(t, torch.full((4096,), n * (n + 1) / 2), rtol=1e-2), t[:4]
    y = torch.full((3,), float(r))
    dist.all_reduce(y, group=g)  # the group goes on after pycomm's own call
    assert torch.equal(y, torch.full((3,), float(n * (n - 1) / 2)))
    comm.close()
    dist.barrier()
    dist.destroy_process_group()
    if r == 0:
        print(f"torch and pycomm ok on {n} ranks", flush=True)


if __name__ == "__main__":
    main()
