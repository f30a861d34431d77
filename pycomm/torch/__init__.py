"""pycomm as a torch.distributed backend.

    import pycomm.torch                      # registers the backend "pycomm"
    dist.init_process_group("pycomm")        # torchrun / env://, tcp://, file://
    g = dist.new_group([0, 1], backend="pycomm")

    from pycomm.torch import hooks           # int8 / bf16 / fp16 DDP comm hooks
    ddp.register_comm_hook(hooks.Int8State(), hooks.int8_hook)

No entry point registers it at `import torch`: torch then imports every such
plug-in, and a plug-in that fails to import breaks `import torch` itself.
"""
import torch.distributed as dist

from .process_group import ProcessGroupPycomm, create, devices

__all__ = ["ProcessGroupPycomm", "BACKEND", "register"]

BACKEND = "pycomm"


def register():
    """Registers the backend "pycomm" with torch.distributed (idempotent)."""
    if BACKEND.upper() in dist.Backend._plugins:
        return
    dist.Backend.register_backend(BACKEND, create, extended_api=True, devices=devices())


register()
