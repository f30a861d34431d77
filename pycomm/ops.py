"""Reduction operators, by name or as pycomm.ReduceOp (codes match the native core)."""
import enum


class ReduceOp(enum.IntEnum):
    SUM = 0
    PROD = 1
    MIN = 2
    MAX = 3
    AVG = 4  # floating-point dtypes only


_CODES = {"sum": 0, "prod": 1, "min": 2, "max": 3, "avg": 4}
_CODES.update({op: int(op) for op in ReduceOp})


def op_code(op) -> int:
    """'sum' | 'prod' | 'min' | 'max' | 'avg' | ReduceOp -> native code."""
    try:
        return _CODES[op]
    except KeyError:
        raise ValueError(f"unknown reduction op {op!r}; expected one of "
                         "'sum', 'prod', 'min', 'max', 'avg' or a pycomm.ReduceOp") from None
    except TypeError:
        raise TypeError(f"op must be a string or pycomm.ReduceOp, not {type(op).__name__}") from None
