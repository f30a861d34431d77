"""pycomm as a torch.distributed backend.

    import pycomm.torch                      # registers the backend "pycomm"
    dist.init_process_group("pycomm")        # torchrun / env://, tcp://, file://
    g = dist.new_group([0, 1], backend="pycomm")

    from pycomm.torch import hooks           # int8 / bf16 / fp16 DDP comm hooks
    ddp.register_comm_hook(hooks.Int8State(), hooks.int8_hook)

The backend also registers itself at `import torch` through the package's
`torch.backends` entry point when pycomm is installed.
"""
import torch.distributed as dist

from pycomm import _C

from .process_group import ProcessGroupPycomm, create

__all__ = ["ProcessGroupPycomm", "BACKEND", "register"]

BACKEND = "pycomm"


def _devices():
    try:
        cuda = bool(_C.cuda.built())
    except AttributeError:
        cuda = False
    return ["cpu", "cuda"] if cuda else ["cpu"]


def register():
    """Registers the backend "pycomm" with torch.distributed (idempotent)."""
    if BACKEND.upper() in dist.Backend._plugins:
        return
    dist.Backend.register_backend(BACKEND, create, extended_api=True, devices=_devices())


def _autoload():
    # torch's `torch.backends` entry point: runs inside `import torch`, so it
    # must never raise (a broken pycomm build must not break torch).
    try:
        register()
    except Exception:  # noqa: BLE001
        pass


register()
