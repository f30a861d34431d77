"""pycomm as a torch.distributed backend.

    import pycomm.torch                      # registers the backend "pycomm"
    dist.init_process_group("pycomm")        # torchrun / env://, tcp://, file://
    g = dist.new_group([0, 1], backend="pycomm")

    from pycomm.torch import hooks           # int8 / bf16 / fp16 DDP comm hooks
    ddp.register_comm_hook(hooks.Int8State(), hooks.int8_hook)

    comm = pycomm.torch.communicator(g)      # the pycomm.Communicator under a "pycomm" group
    comm.allreduce(t, compress="int8")

No entry point registers it at `import torch`: torch then imports every such
plug-in, and a plug-in that fails to import breaks `import torch` itself.
"""
import torch.distributed as dist

from .process_group import ProcessGroupPycomm, create, devices

__all__ = ["ProcessGroupPycomm", "BACKEND", "communicator", "register"]

BACKEND = "pycomm"


def communicator(group=None):
    """The pycomm.Communicator under a "pycomm" process group (default: the
    default group), for pycomm's own calls (compress=, the uneven forms, ...)
    on the same ranks; they run in the order called, with the group's ops."""
    pg = group if group is not None else dist.group.WORLD
    if pg is None:
        raise ValueError("torch.distributed is not initialized: call dist.init_process_group first")
    if not isinstance(pg, ProcessGroupPycomm):
        name = pg.name() if hasattr(pg, "name") else type(pg).__name__
        raise TypeError(f"communicator(): the group's backend is {name!r}, not 'pycomm' "
                        "(make one with dist.new_group(backend='pycomm'))")
    return pg.comm


def register():
    """Registers the backend "pycomm" with torch.distributed (idempotent)."""
    if BACKEND.upper() in dist.Backend._plugins:
        return
    dist.Backend.register_backend(BACKEND, create, extended_api=True, devices=devices())


register()
