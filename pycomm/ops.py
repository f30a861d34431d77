"""Reduction operators, by name or as pycomm.ReduceOp: the native core's
codes (csrc/common/dtype.h, exported as _C.REDUCE_OPS). AVG takes
floating-point dtypes only."""
import enum

from . import _C

ReduceOp = enum.IntEnum("ReduceOp", {name.upper(): code for name, code in _C.REDUCE_OPS.items()},
                        module=__name__)

_CODES = dict(_C.REDUCE_OPS)
_CODES.update({op: int(op) for op in ReduceOp})


def op_code(op) -> int:
    """'sum' | 'prod' | 'min' | 'max' | 'avg' | ReduceOp -> native code."""
    try:
        return _CODES[op]
    except KeyError:
        raise ValueError(f"unknown reduction op {op!r}; expected one of "
                         f"{', '.join(map(repr, _C.REDUCE_OPS))} or a pycomm.ReduceOp") from None
    except TypeError:
        raise TypeError(f"op must be a string or pycomm.ReduceOp, not {type(op).__name__}") from None
