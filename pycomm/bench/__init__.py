"""pycomm.bench: collective benchmarks with nccl-tests columns.

    python -m pycomm.bench allreduce -n 2 -b 8 -e 256M -f 4 --check --compare mpi,gloo

See bench/README.md for the options, the columns and how times are taken.
"""
from .cli import main

__all__ = ["main"]
