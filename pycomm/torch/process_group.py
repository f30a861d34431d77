"""The "pycomm" process group: a Python subclass of torch's ProcessGroup over
one pycomm.Communicator.

Native (one pycomm collective each): allreduce (SUM, AVG, PRODUCT, MIN,
MAX), reduce_scatter (tensor and list forms), allgather (tensor and list
forms), broadcast, barrier. Composed from those (correct, not
bandwidth-optimal): reduce = allreduce kept at the root; gather = allgather
kept at the root; scatter = broadcast of the root's concatenation;
all_to_all = allgather of every rank's (padded) input, each rank keeping its
pieces; all_reduce SUM of a sparse COO tensor = allgathers of its indices and
values, coalesced, as gloo does it; send/recv go through the group's c10d
store (see p2p.py), and so does monitored_barrier (monitored_barrier.py).

Ops run to completion on the calling thread (pycomm's cheapest path) and
return a completed Work, except large allreduces where overlapping pays
(completion.py): those run on pycomm's worker thread while the caller (DDP's
backward pass) goes on. Errors raised by pycomm surface from `wait()` and
the future, as with gloo. Non-contiguous tensors are copied to contiguous
ones and the results copied back. Data-movement ops take any dtype (moved as
bytes); reductions take pycomm's dtypes plus complex (SUM/AVG, as pairs of reals)
and bool (all_reduce and reduce: SUM/MAX = or, PRODUCT/MIN = and).
"""
import torch
import torch.distributed as dist

import pycomm
from pycomm.errors import CommError
from pycomm.ops import op_code
from pycomm.store import TorchStore

from .completion import Completer, overlap_bytes
from .monitored_barrier import MonitoredBarrier
from .p2p import StoreP2P
from .work import Work

__all__ = ["ProcessGroupPycomm", "devices"]

_R = dist.ReduceOp.RedOpType
_OPS = {int(_R.SUM): "sum", int(_R.AVG): "avg", int(_R.PRODUCT): "prod", int(_R.MIN): "min",
        int(_R.MAX): "max"}
_CODES = {k: op_code(name) for k, name in _OPS.items()}  # torch's op -> pycomm's code
_NAMES = {code: _OPS[k] for k, code in _CODES.items()}
_NATIVE = {torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int8, torch.uint8,
           torch.int32, torch.int64}
_COMPLEX = {torch.complex64, torch.complex128}


def devices():
    """The device types this pycomm build serves: "cpu", and "cuda" when built with CUDA."""
    try:
        cuda = bool(pycomm._C.cuda.built())
    except AttributeError:
        cuda = False
    return ["cpu", "cuda"] if cuda else ["cpu"]


def _op(opts):
    """The pycomm op name of an options object, a dist.ReduceOp or a ReduceOp.RedOpType."""
    op = getattr(opts, "reduceOp", opts)
    code = int(getattr(op, "op", op))
    try:
        return _OPS[code]
    except KeyError:
        raise ValueError(f"pycomm: reduction {op} is not supported (SUM, AVG, PRODUCT, MIN, MAX are)") from None


# bool reductions as uint8 (0/1): SUM is logical or, PRODUCT logical and, as with gloo.
_BOOL_OPS = {"sum": "max", "max": "max", "prod": "min", "min": "min"}


def _reducible(t, op):
    """A contiguous tensor pycomm can reduce holding t's values, or raises TypeError."""
    t = t.detach()  # DLPack refuses tensors that require grad; same memory
    if t.dtype in _NATIVE:
        return t if t.is_contiguous() else t.contiguous()
    if t.dtype == torch.bool and op in _BOOL_OPS:
        return (t if t.is_contiguous() else t.contiguous()).view(torch.uint8)
    if t.dtype in _COMPLEX and op in ("sum", "avg"):
        return torch.view_as_real(t if t.is_contiguous() else t.contiguous())
    raise TypeError(f"pycomm: {op} of {t.dtype} tensors is not supported")


def _movable(t):
    """A contiguous tensor pycomm can move holding t's bytes (any dtype)."""
    t = t.detach()
    c = t if t.is_contiguous() else t.contiguous()
    if c.dtype in _NATIVE:
        return c
    return c.reshape(-1).view(torch.uint8)


def _write_back(dst, src):
    """Copies src (a contiguous stand-in for dst) into dst unless they share memory."""
    dst = dst.detach()
    if src.data_ptr() != dst.data_ptr() or not dst.is_contiguous():
        if src.dtype != dst.dtype:  # a byte, real-pair or uint8 stand-in
            src = src.contiguous().reshape(-1).view(dst.dtype)
        dst.copy_(src.reshape(dst.shape))


def _native_op(t, op):
    """The op pycomm runs for `op` on t's stand-in (bool tensors reduce as uint8)."""
    return _BOOL_OPS[op] if t.dtype == torch.bool else op


def _check_same(tensors, what):
    t0 = tensors[0]
    for t in tensors[1:]:
        if t.dtype != t0.dtype:
            raise TypeError(f"pycomm {what}: tensors have different dtypes ({t0.dtype}, {t.dtype})")


class ProcessGroupPycomm(dist.ProcessGroup):
    """torch.distributed over pycomm. Made by `init_process_group("pycomm")` /
    `new_group(backend="pycomm")`; `.comm` is the pycomm.Communicator underneath."""

    def __init__(self, store, rank, size, timeout, group_name="", global_ranks=None):
        super().__init__(rank, size)
        self._rank = rank
        self._size = size
        self._group_name = group_name
        self._group_desc = ""
        self._global_ranks = global_ranks
        self._timeout = timeout.total_seconds() if hasattr(timeout, "total_seconds") else float(timeout)
        self._c10d_store = store
        self.comm = pycomm.Communicator(rank, size, TorchStore(store), timeout=self._timeout,
                                        name=f"torch/{group_name}")
        self._p2p = StoreP2P(store, rank, size, self._timeout)
        self._monitored_barrier = MonitoredBarrier(store, rank, size)
        self._overlap = overlap_bytes(self.comm.hosts, rank)  # None: every op inline
        self._completer = Completer(f"torch/{group_name}")

    # -- identity --------------------------------------------------------------

    def getBackendName(self):
        return "pycomm"

    def name(self):
        return "pycomm"

    def getGroupName(self):
        return self._group_name

    def setGroupName(self, name):
        self._group_name = name

    def getGroupDesc(self):
        return self._group_desc

    def setGroupDesc(self, desc):
        self._group_desc = desc

    @property
    def group_name(self):
        return self._group_name

    @property
    def group_desc(self):
        return self._group_desc

    def __repr__(self):
        return f"<ProcessGroupPycomm {self._group_name!r} rank {self._rank} of {self._size} over {self.comm.transport}>"

    # -- running an op ---------------------------------------------------------

    @staticmethod
    def _run(result, fn, *args):
        """Runs fn(*args) now; a pycomm communication error goes into the Work,
        argument errors are raised at once (before anything was sent)."""
        try:
            fn(*args)
        except CommError as e:
            return Work(result, error=e)
        return Work(result)

    def _overlapped(self, nbytes):
        """Whether an op of nbytes runs on pycomm's worker thread (completion.py)."""
        return self._overlap is not None and nbytes >= self._overlap

    def _future(self, native, value, then=None):
        """A torch Future for `native`, an op submitted with async_op=True: set
        on the completion thread to `value` once the op is done and then() ran,
        or to the op's error (the comm hooks' overlapped path)."""
        fut = torch.futures.Future()

        def settle(done):
            error = done.exception()
            if error is None and then is not None:
                try:
                    then()
                except Exception as e:  # noqa: BLE001  handed to whoever waits on the future
                    error = e
            if error is None:
                fut.set_result(value)
            else:
                fut.set_exception(error)

        self._completer.add(native).add_done_callback(settle)
        return fut

    # -- reductions --------------------------------------------------------------

    def allreduce(self, tensors, opts=None):
        if isinstance(tensors, torch.Tensor):
            tensors = [tensors]
        if opts is None:
            code = _CODES[int(_R.SUM)]
        else:
            try:  # the common case, kept short: a few us of Python in all
                code = _CODES[opts.reduceOp.op.value]
            except (AttributeError, KeyError):
                code = op_code(_op(opts))
        if len(tensors) == 1:
            t = tensors[0]
            if (t.layout == torch.strided and t.dtype in _NATIVE and t.is_contiguous() and not t.is_cuda
                    and not t.requires_grad):
                overlap = self._overlapped(t.numel() * t.element_size())
                try:
                    native = self.comm.allreduce(t, code, async_op=overlap, timeout=self._timeout)
                except CommError as e:
                    return Work(tensors, error=e)
                if not overlap:
                    return Work(tensors)
                return Work(tensors, pending=self._completer.add(native), native=native)
        return self._run(tensors, self._allreduce_list, tensors, _NAMES[code])

    def _allreduce_list(self, tensors, op):
        for t in tensors:
            if t.layout == torch.sparse_coo:
                t.copy_(self._sparse_sum(t, op))
                continue
            c = _reducible(t, op)
            self.comm.allreduce(c, _native_op(t, op))
            _write_back(t, c)

    def _sparse_sum(self, t, op):
        """The sum of a sparse COO tensor over the group, as gloo computes it:
        every rank's (indices, values) gathered in rank order and coalesced
        (duplicate indices summed), so every rank gets the same tensor."""
        if op != "sum":
            raise ValueError(f"pycomm: sparse all_reduce supports SUM only, not {op.upper()}")
        t = t.detach().coalesce()
        idx, vals = t.indices().contiguous(), t.values().contiguous()
        counts = torch.empty(self._size, dtype=torch.int64)
        self.comm.allgather(torch.tensor([idx.shape[1]], dtype=torch.int64), out=counts)
        most = int(counts.max())
        # Padded to the largest count: allgather moves equal blocks.
        pad_idx = torch.zeros((idx.shape[0], most), dtype=torch.int64)
        pad_idx[:, :idx.shape[1]] = idx
        pad_vals = torch.zeros((most, *vals.shape[1:]), dtype=vals.dtype)
        pad_vals[:vals.shape[0]] = vals
        all_idx = torch.empty((self._size, *pad_idx.shape), dtype=torch.int64)
        all_vals = torch.empty((self._size, *pad_vals.shape), dtype=vals.dtype)
        self.comm.allgather(pad_idx.reshape(-1), out=all_idx.reshape(-1))
        self.comm.allgather(_movable(pad_vals).reshape(-1), out=_movable(all_vals).reshape(-1))
        keep = [int(n) for n in counts]
        idx = torch.cat([all_idx[r, :, :n] for r, n in enumerate(keep)], dim=1)
        vals = torch.cat([all_vals[r, :n] for r, n in enumerate(keep)])
        return torch.sparse_coo_tensor(idx, vals, t.shape).coalesce()

    def allreduce_coalesced(self, tensors, opts=None):
        op = "sum" if opts is None else _op(opts)
        return self._run(tensors, self._allreduce_coalesced, tensors, op)

    def _allreduce_coalesced(self, tensors, op):
        if not tensors:
            return
        _check_same(tensors, "allreduce_coalesced")
        flats = [_reducible(t, op).reshape(-1) for t in tensors]
        buf = torch.cat(flats)
        self.comm.allreduce(buf, _native_op(tensors[0], op))
        offset = 0
        for t, f in zip(tensors, flats):
            _write_back(t, buf[offset:offset + f.numel()])
            offset += f.numel()

    def reduce(self, tensors, opts):
        op, root = _op(opts), opts.rootRank
        return self._run(tensors, self._reduce, tensors, op, root)

    def _reduce(self, tensors, op, root):
        # Composed: an allreduce whose result only the root keeps.
        for t in tensors:
            c = _reducible(t, op)
            o = _native_op(t, op)
            if self._rank == root:
                self.comm.allreduce(c, o)
                _write_back(t, c)
            else:
                self.comm.allreduce(c, o, out=torch.empty_like(c))

    def reduce_scatter(self, outputs, inputs, opts=None):
        op = "sum" if opts is None else _op(opts)
        return self._run(outputs, self._reduce_scatter_lists, outputs, inputs, op)

    def _reduce_scatter_lists(self, outputs, inputs, op):
        for out, ins in zip(outputs, inputs):
            if len(ins) != self._size:
                raise ValueError(f"reduce_scatter: need {self._size} input tensors, got {len(ins)}")
            _check_same([out, *ins], "reduce_scatter")
            n = out.numel()
            if any(i.numel() != n for i in ins):
                raise ValueError("reduce_scatter: every input must have as many elements as the output")
            buf = _reducible(torch.cat([i.reshape(-1) for i in ins]), op)
            c = _reducible(out, op)
            self.comm.reduce_scatter(buf.reshape(-1), _native_op(out, op), out=c.reshape(-1))
            _write_back(out, c)

    def _reduce_scatter_base(self, output, input, opts=None):
        op = "sum" if opts is None else _op(opts)
        return self._run([output], self._reduce_scatter_tensor, output, input, op)

    reduce_scatter_single = _reduce_scatter_base

    def _reduce_scatter_tensor(self, output, input, op):
        if output.dtype != input.dtype:
            raise TypeError(f"reduce_scatter_tensor: output is {output.dtype}, input {input.dtype}")
        if input.numel() != output.numel() * self._size:
            raise ValueError(f"reduce_scatter_tensor: input has {input.numel()} elements, "
                             f"need {self._size} x {output.numel()}")
        c = _reducible(output, op)
        self.comm.reduce_scatter(_reducible(input, op).reshape(-1), _native_op(output, op), out=c.reshape(-1))
        _write_back(output, c)

    def reduce_scatter_tensor_coalesced(self, outputs, inputs, opts=None):
        op = "sum" if opts is None else _op(opts)

        def run():
            for o, i in zip(outputs, inputs):
                self._reduce_scatter_tensor(o, i, op)
        return self._run(outputs, run)

    # -- data movement -----------------------------------------------------------

    def broadcast(self, tensors, opts=None):
        if isinstance(tensors, torch.Tensor):
            tensors = [tensors]
        root = 0 if opts is None else opts.rootRank
        if len(tensors) == 1:
            t = tensors[0]
            if t.dtype in _NATIVE and t.is_contiguous() and not t.requires_grad:
                try:
                    self.comm.broadcast(t, root)
                except CommError as e:
                    return Work(tensors, error=e)
                return Work(tensors)
        return self._run(tensors, self._broadcast, tensors, root)

    def _broadcast(self, tensors, root):
        for t in tensors:
            c = _movable(t)
            self.comm.broadcast(c, root)
            _write_back(t, c)

    def _allgather_base(self, output, input, opts=None):
        return self._run([output], self._allgather_tensor, output, input)

    all_gather_single = _allgather_base

    def _allgather_tensor(self, output, input):
        if output.dtype != input.dtype:
            raise TypeError(f"all_gather_into_tensor: output is {output.dtype}, input {input.dtype}")
        if output.numel() != input.numel() * self._size:
            raise ValueError(f"all_gather_into_tensor: output has {output.numel()} elements, "
                             f"need {self._size} x {input.numel()}")
        c = _movable(output)
        self.comm.allgather(_movable(input).reshape(-1), out=c.reshape(-1))
        _write_back(output, c)

    def allgather_into_tensor_coalesced(self, outputs, inputs, opts=None):
        def run():
            for o, i in zip(outputs, inputs):
                self._allgather_tensor(o, i)
        return self._run(outputs, run)

    def allgather(self, output_lists, inputs, opts=None):
        return self._run(output_lists, self._allgather_lists, output_lists, inputs)

    def _allgather_lists(self, output_lists, inputs):
        for outs, x in zip(output_lists, inputs):
            if len(outs) != self._size:
                raise ValueError(f"all_gather: need {self._size} output tensors, got {len(outs)}")
            _check_same([x, *outs], "all_gather")
            if any(o.numel() != x.numel() for o in outs):
                raise ValueError("all_gather: every output must have as many elements as the input")
            whole = self.comm.allgather(_movable(x).reshape(-1))
            n = whole.numel() // self._size
            for r, o in enumerate(outs):
                _write_back(o, whole[r * n:(r + 1) * n])

    def allgather_coalesced(self, output_lists, inputs, opts=None):
        # output_lists[r][i] receives rank r's inputs[i]. Composed: one list all_gather per input.
        def run():
            if len(output_lists) != self._size:
                raise ValueError(f"all_gather_coalesced: need {self._size} output lists, got {len(output_lists)}")
            for i, x in enumerate(inputs):
                self._allgather_lists([[outs[i] for outs in output_lists]], [x])
        return self._run(output_lists, run)

    def gather(self, output_lists, inputs, opts):
        root = opts.rootRank
        return self._run(output_lists, self._gather, output_lists, inputs, root)

    def _gather(self, output_lists, inputs, root):
        # Composed: an allgather that only the root keeps.
        for i, x in enumerate(inputs):
            whole = self.comm.allgather(_movable(x).reshape(-1))
            if self._rank == root:
                outs = output_lists[i]
                if len(outs) != self._size:
                    raise ValueError(f"gather: need {self._size} output tensors at the root, got {len(outs)}")
                n = whole.numel() // self._size
                for r, o in enumerate(outs):
                    _write_back(o, whole[r * n:(r + 1) * n])

    def scatter(self, outputs, input_lists, opts):
        root = opts.rootRank
        return self._run(outputs, self._scatter, outputs, input_lists, root)

    def _scatter(self, outputs, input_lists, root):
        # Composed: the root's inputs concatenated and broadcast; each rank keeps its part.
        for i, out in enumerate(outputs):
            c = _movable(out).reshape(-1)
            n = c.numel()
            if self._rank == root:
                ins = input_lists[i]
                if len(ins) != self._size:
                    raise ValueError(f"scatter: need {self._size} input tensors at the root, got {len(ins)}")
                buf = torch.cat([_movable(t).reshape(-1) for t in ins])
                if buf.numel() != n * self._size:
                    raise ValueError("scatter: every input must have as many elements as the output")
            else:
                buf = c.new_empty(n * self._size)
            self.comm.broadcast(buf, root)
            _write_back(out, buf[self._rank * n:(self._rank + 1) * n])

    def alltoall_base(self, output, input, output_split_sizes, input_split_sizes, opts=None):
        return self._run([output], self._alltoall_single, output, input,
                         list(output_split_sizes), list(input_split_sizes))

    def _alltoall_single(self, output, input, out_splits, in_splits):
        # Composed: every rank's input is allgathered (padded to the largest),
        # each rank copies out the pieces addressed to it. size x the bytes of
        # a real all-to-all; correct for even and uneven splits.
        n = self._size
        if output.dtype != input.dtype:
            raise TypeError(f"all_to_all_single: output is {output.dtype}, input {input.dtype}")
        rows_in = input.shape[0] if input.dim() else 1
        row = input.numel() // rows_in if rows_in else 0
        if not in_splits:
            if rows_in % n:
                raise ValueError(f"all_to_all_single: input's first dimension {rows_in} is not divisible by {n}")
            in_splits = [rows_in // n] * n
        if not out_splits:
            rows_out = output.shape[0] if output.dim() else 1
            if rows_out % n:
                raise ValueError(f"all_to_all_single: output's first dimension {rows_out} is not divisible by {n}")
            out_splits = [rows_out // n] * n
        if len(in_splits) != n or len(out_splits) != n:
            raise ValueError(f"all_to_all_single: split sizes need {n} entries")
        x = _movable(input).reshape(-1)
        scale = x.numel() // max(input.numel(), 1) if input.numel() else 1  # bytes per element, for byte views
        unit = row * scale
        # Every rank's split sizes, then every rank's input padded to the longest.
        meta = self.comm.allgather(torch.tensor(in_splits, dtype=torch.int64))
        meta = meta.reshape(n, n).tolist()
        longest = max(sum(s) for s in meta) * unit
        padded = x.new_zeros(longest)
        padded[:x.numel()] = x
        whole = self.comm.allgather(padded).reshape(n, longest)
        pieces = []
        for src in range(n):
            start = sum(meta[src][:self._rank]) * unit
            count = meta[src][self._rank] * unit
            if count != out_splits[src] * unit:
                raise ValueError(f"all_to_all_single: rank {src} sends {meta[src][self._rank]} rows, "
                                 f"this rank expects {out_splits[src]}")
            pieces.append(whole[src, start:start + count])
        res = torch.cat(pieces) if pieces else whole.new_empty(0)
        _write_back(output, res)

    def alltoall(self, outputs, inputs, opts=None):
        def run():
            sizes = [t.numel() for t in inputs]
            out_sizes = [t.numel() for t in outputs]
            flat_in = torch.cat([t.reshape(-1) for t in inputs])
            flat_out = flat_in.new_empty(sum(out_sizes))
            self._alltoall_single(flat_out, flat_in, out_sizes, sizes)
            offset = 0
            for o, k in zip(outputs, out_sizes):
                _write_back(o, flat_out[offset:offset + k])
                offset += k
        return self._run(outputs, run)

    def barrier(self, opts=None):
        return self._run([], self.comm.barrier)

    def monitored_barrier(self, timeout=None, wait_all_ranks=False):
        """A barrier that names the ranks missing from it (rank 0 raises
        "Rank N failed to pass monitoredBarrier ..."); through the store, so it
        works while the communicator is stuck (monitored_barrier.py).
        timeout: a timedelta or seconds; None = the group's."""
        self._monitored_barrier(self._timeout if timeout is None else timeout, wait_all_ranks)

    # -- point to point (composed over the store) ----------------------------------

    def send(self, tensors, dst, tag=0):
        for t in tensors:
            self._p2p.send(t, dst, tag)
        return Work(tensors)

    def recv(self, tensors, src, tag=0):
        if len(tensors) != 1:
            raise ValueError("pycomm recv takes one tensor")
        pending = self._p2p.recv(tensors[0], src, tag)
        w = Work(tensors, pending=pending)
        w._src = src
        return w

    def recv_anysource(self, tensors, tag=0):
        if len(tensors) != 1:
            raise ValueError("pycomm recv takes one tensor")
        pending = self._p2p.recv(tensors[0], None, tag)
        return _AnySourceWork(tensors, pending=pending)

    # -- coalescing and lifetime ---------------------------------------------------

    def _start_coalescing(self, device=None):
        pass  # every op runs when called; nothing to batch

    def _end_coalescing(self, device=None):
        return Work([])

    def _get_backend(self, device):
        """This group is its own backend for the devices pycomm serves.

        torch registers no per-device backend on a Python ProcessGroup that a
        plug-in returns, so ProcessGroup._get_backend raises "No backend type
        associated with device type cpu". torch >= 2.14's batch_isend_irecv
        calls it on every ProcessGroup subclass (2.13 only on a plain
        ProcessGroup) and reads `supports_coalescing` (absent here: no
        coalescing, each op runs on its own)."""
        try:
            return super()._get_backend(device)
        except RuntimeError:
            if torch.device(device).type in devices():
                return self
            raise

    @property
    def _device_types(self):
        """The devices this group serves, as gloo's group lists its own
        (torch registers none on a Python ProcessGroup a plug-in returns;
        torch >= 2.14's monitored_barrier and object collectives read it)."""
        return [torch.device(d) for d in devices()]

    def abort(self):
        self.comm.abort("process group aborted")
        self._p2p.close()

    def shutdown(self):
        self.comm.close()  # finishes the queued ops, so the completer can stop
        self._completer.close()
        self._p2p.close()


class _AnySourceWork(Work):
    """A receive from any rank: the source is known once it completed."""

    def _settle(self, timeout=None):
        pending = self._pending
        super()._settle(timeout)
        if pending is not None and self._error is None:
            self._src = pending.result()


def create(dist_options, backend_options=None):
    """The creator registered with torch (extended API: gives the group's name)."""
    return ProcessGroupPycomm(dist_options.store, dist_options.group_rank, dist_options.group_size,
                              dist_options.timeout, group_name=dist_options.group_id,
                              global_ranks=list(dist_options.global_ranks_in_group))
