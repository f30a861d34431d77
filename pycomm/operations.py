"""The native core's table of operations (csrc/collectives/operation.h), as
the Python layer reads it: what each op takes and how big its buffers are on
a rank, so that output allocation and GPU routing are written once."""
from . import _C

OPERATIONS = _C.operations()  # csrc/collectives/operation.h: what each op takes


class Row:
    """An operation's row of _C.operations(), as attributes (read on every call)."""
    __slots__ = ("code", "reduces", "rooted", "in_place", "counts", "has_in", "has_out", "in_at_root",
                 "out_at_root")

    def __init__(self, row):
        self.code = row["code"]
        self.reduces, self.rooted, self.in_place, self.counts = (
            row["reduces"], row["rooted"], row["in_place"], row["counts"])
        self.has_in, self.has_out = row["in"] != "none", row["out"] != "none"
        self.in_at_root, self.out_at_root = row["in"].endswith("at root"), row["out"].endswith("at root")


ROWS = {name: Row(row) for name, row in OPERATIONS.items()}
ALLREDUCE = ROWS["allreduce"].code


def present(extent, rank, root):
    """Whether rank passes a buffer of this extent (_C.operations())."""
    return extent != "none" and (rank == root or not extent.endswith("at root"))


def per_rank(row, n, size):
    """The op's count from an x of n elements, or None where x does not
    define it (or the size does not divide: the core says so)."""
    if row["in"].startswith("count"):
        return n
    if row["in"].startswith("ranks") and n % size == 0:
        return n // size
    return None


def elems(extent, count, size, rank, counts, recv_counts):
    """Elements of a buffer of this extent, or None when unknown."""
    try:
        if extent.startswith("count"):
            return count
        if extent.startswith("ranks"):
            return None if count is None else count * size
        if extent == "mine":
            return int(counts[rank])
        if extent == "sum":
            return int(sum(int(c) for c in counts))
        if extent == "recv sum":
            return int(sum(int(c) for c in recv_counts))
    except (TypeError, ValueError, IndexError):
        return None  # malformed counts: the core names the problem
    return None
