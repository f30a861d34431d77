"""torch tensors and reduce ops as pycomm's Communicator takes them: the op
codes torch's ReduceOp maps to, contiguous stand-ins for tensors pycomm
cannot take as they are (non-contiguous, bool, complex, dtypes it does not
reduce), numpy views or pycomm.Memory for the cheapest hand-over, and the
copies back."""
import torch
import torch.distributed as dist

import pycomm
from pycomm.ops import op_code

REDOP = dist.ReduceOp.RedOpType
OP_NAMES_BY_TORCH = {int(REDOP.SUM): "sum", int(REDOP.AVG): "avg", int(REDOP.PRODUCT): "prod",
                     int(REDOP.MIN): "min", int(REDOP.MAX): "max"}
OP_CODES = {k: op_code(name) for k, name in OP_NAMES_BY_TORCH.items()}  # torch's op -> pycomm's code
OP_NAMES = {code: OP_NAMES_BY_TORCH[k] for k, code in OP_CODES.items()}
DTYPE_NAMES = {torch.float32: "float32", torch.float64: "float64", torch.float16: "float16",
               torch.bfloat16: "bfloat16", torch.int8: "int8", torch.uint8: "uint8", torch.int32: "int32",
               torch.int64: "int64"}  # the dtypes pycomm reduces, by pycomm's names (_C.DTYPES)
NATIVE = set(DTYPE_NAMES)
NUMPY = NATIVE - {torch.bfloat16}  # those numpy has too
COMPLEX = {torch.complex64, torch.complex128}


def op_name(opts):
    """The pycomm op name of an options object, a dist.ReduceOp or a
    ReduceOp.RedOpType (PREMUL_SUM: "sum", its factor from premul_factor)."""
    op = getattr(opts, "reduceOp", opts)
    code = int(getattr(op, "op", op))
    if code == PREMUL_SUM:
        return "sum"
    try:
        return OP_NAMES_BY_TORCH[code]
    except KeyError:
        raise ValueError(f"pycomm: reduction {op} is not supported "
                         "(SUM, AVG, PRODUCT, MIN, MAX, PREMUL_SUM are)") from None


PREMUL_SUM = int(REDOP.PREMUL_SUM)


def premul_factor(opts):
    """PREMUL_SUM's factor (a number or a one-element tensor), else None:
    each rank's input is multiplied by it before the sum, as NCCL does."""
    op = getattr(opts, "reduceOp", opts)
    if int(getattr(op, "op", op)) != PREMUL_SUM:
        return None
    factor = getattr(op, "factor", None)
    if factor is None:
        raise ValueError("pycomm: PREMUL_SUM needs a factor (dist._make_nccl_premul_sum(factor))")
    return factor


def scaled(t, factor):
    """t, or a new tensor t * factor (PREMUL_SUM), in t's dtype."""
    if factor is None:
        return t
    return (t.detach() * factor).to(t.dtype)


# bool reductions as uint8 (0/1): SUM is logical or, PRODUCT logical and, as with gloo.
BOOL_OPS = {"sum": "max", "max": "max", "prod": "min", "min": "min"}


def reducible(t, op):
    """A contiguous tensor pycomm can reduce holding t's values, or raises TypeError."""
    t = t.detach()  # DLPack refuses tensors that require grad; same memory
    if t.dtype in NATIVE:
        return t if t.is_contiguous() else t.contiguous()
    if t.dtype == torch.bool and op in BOOL_OPS:
        return (t if t.is_contiguous() else t.contiguous()).view(torch.uint8)
    if t.dtype in COMPLEX and op in ("sum", "avg"):
        return torch.view_as_real(t if t.is_contiguous() else t.contiguous())
    raise TypeError(f"pycomm: {op} of {t.dtype} tensors is not supported")


def movable(t):
    """A contiguous tensor pycomm can move holding t's bytes (any dtype)."""
    t = t.detach()
    c = t if t.is_contiguous() else t.contiguous()
    if c.dtype in NATIVE:
        return c
    return c.reshape(-1).view(torch.uint8)


def per_element(stand_in, t):
    """How many of stand_in's elements hold one of t's (a byte or real-pair view)."""
    return t.element_size() // stand_in.element_size()


def write_back(dst, src):
    """Copies src (a contiguous stand-in for dst) into dst unless they share memory."""
    dst = dst.detach()
    if src.data_ptr() != dst.data_ptr() or not dst.is_contiguous():
        if src.dtype != dst.dtype:  # a byte, real-pair or uint8 stand-in
            src = src.contiguous().reshape(-1).view(dst.dtype)
        dst.copy_(src.reshape(dst.shape))


def one_tensor(tensors, what):
    """The one tensor of a point-to-point call, detached (same memory)."""
    if len(tensors) != 1:
        raise ValueError(f"pycomm {what} takes one tensor, got {len(tensors)}")
    return tensors[0].detach()


def host_view(t):
    """Contiguous detached CPU tensor t as the Communicator gets it: a numpy
    view where numpy has t's dtype (the binding takes numpy's buffer in about
    0.1 us; a tensor's DLPack export costs about 3 us a call), else t
    (bfloat16)."""
    return t.numpy() if t.dtype in NUMPY else t


def byte_view(t):
    """Contiguous CPU tensor t's memory for point-to-point, which moves bytes
    whatever the dtype: in t's dtype where pycomm has it, else as uint8. A
    pycomm.Memory (0.06 us, holding t alive) where a numpy view costs 0.7."""
    name = DTYPE_NAMES.get(t.dtype)
    if name is None:
        return pycomm.Memory(t.data_ptr(), t.numel() * t.element_size(), "uint8", keep=t)
    return pycomm.Memory(t.data_ptr(), t.numel(), name, keep=t)


def split_into(outs, flat, counts):
    """Copies consecutive pieces of flat, counts[i] elements each, into outs[i]."""
    at = 0
    for o, k in zip(outs, counts):
        write_back(o, flat[at:at + k])
        at += k


def split_counts(t, splits, n, what):
    """Elements per peer of t cut by `splits` rows of its first dimension
    (empty: an even split)."""
    rows = t.shape[0] if t.dim() else 1
    row = t.numel() // rows if rows else 0
    if not splits:
        if rows % n:
            raise ValueError(f"all_to_all_single: the {what}'s first dimension {rows} is not divisible by {n}")
        splits = [rows // n] * n
    if len(splits) != n:
        raise ValueError(f"all_to_all_single: {what} split sizes need {n} entries, got {len(splits)}")
    if sum(splits) != rows or any(k < 0 for k in splits):
        raise ValueError(f"all_to_all_single: {what} split sizes {list(splits)} do not add up to {rows} rows")
    return [int(k) * row for k in splits]


def native_op(t, op):
    """The op pycomm runs for `op` on t's stand-in (bool tensors reduce as uint8)."""
    return BOOL_OPS[op] if t.dtype == torch.bool else op


def check_same(tensors, what):
    t0 = tensors[0]
    for t in tensors[1:]:
        if t.dtype != t0.dtype:
            raise TypeError(f"pycomm {what}: tensors have different dtypes ({t0.dtype}, {t.dtype})")
