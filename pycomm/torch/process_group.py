"""The "pycomm" process group: a Python subclass of torch's ProcessGroup over
one pycomm.Communicator.

Every op is one native pycomm operation: allreduce (SUM, AVG, PRODUCT, MIN,
MAX, PREMUL_SUM), reduce_scatter and allgather (tensor forms, list forms
with equal or unequal sizes), broadcast, barrier, reduce, gather, scatter,
all_to_all (single, even or uneven splits, and list forms) and point-to-point
(send, recv, recv_anysource, isend/irecv, batch_isend_irecv with
coalescing) on the communicator's point-to-point engine. all_reduce SUM of a
sparse COO tensor = allgathers of its indices and values, coalesced, as gloo
does it. The c10d store carries rendezvous only, and monitored_barrier
(monitored_barrier.py).

Collectives run to completion on the calling thread (pycomm's cheapest path)
and return a completed Work, except large allreduces where overlapping pays
(completion.py): those run on pycomm's worker thread while the caller (DDP's
backward pass) goes on. Point-to-point ops return at once; their Works wait
on the native ops (work.py). Errors raised by pycomm surface from `wait()` and
the future, as with gloo. Non-contiguous tensors are copied to contiguous
ones and the results copied back; CUDA tensors' point-to-point goes through
host memory. Data-movement ops take any dtype (moved as bytes); reductions
take pycomm's dtypes plus complex (SUM/AVG, as pairs of reals) and bool
(all_reduce and reduce: SUM/MAX = or, PRODUCT/MIN = and).
"""
import os
import numpy as np
import torch
import torch.distributed as dist

import pycomm
from pycomm import flight
from pycomm.errors import CommError
from pycomm.ops import op_code
from pycomm.store import TorchStore

from .completion import Completer, overlap_bytes
from .monitored_barrier import MonitoredBarrier
from .tensors import (DTYPE_NAMES, NATIVE, OP_CODES, OP_NAMES, REDOP, byte_view, check_same, host_view, movable,
                      native_op, one_tensor, op_name, per_element, premul_factor, reducible, scaled, split_counts,
                      split_into, write_back)
from .work import P2PWork, Work

__all__ = ["ProcessGroupPycomm", "devices"]

# torch passes asyncOp=False in the options of a call whose caller only waits
# on the Work and drops it (dist.all_reduce without async_op): such a call
# gets this one completed Work instead of a new one (0.7 us each).
_SYNC_KNOWN = hasattr(dist.AllreduceOptions(), "asyncOp")
_DONE = Work([])


def devices():
    """The device types this pycomm build serves: "cpu", and "cuda" when built with CUDA."""
    try:
        cuda = bool(pycomm._C.cuda.built())
    except AttributeError:
        cuda = False
    return ["cpu", "cuda"] if cuda else ["cpu"]


class ProcessGroupPycomm(dist.ProcessGroup):
    """torch.distributed over pycomm. Made by `init_process_group("pycomm")` /
    `new_group(backend="pycomm")`; `.comm` is the pycomm.Communicator underneath."""

    def __init__(self, store, rank, size, timeout, group_name="", global_ranks=None, comm=None):
        super().__init__(rank, size)
        self._rank = rank
        self._size = size
        self._group_name = group_name
        self._group_desc = ""
        self._global_ranks = global_ranks
        self._timeout = timeout.total_seconds() if hasattr(timeout, "total_seconds") else float(timeout)
        self._c10d_store = store
        self.comm = comm if comm is not None else pycomm.Communicator(
            rank, size, TorchStore(store), timeout=self._timeout, name=f"torch/{group_name}")
        self._batch = None  # the open comm.group() between _start_coalescing and _end_coalescing ...
        self._batch_works = []  # ... and the Works of its ops
        self._monitored_barrier = MonitoredBarrier(store, rank, size)
        self._overlap = overlap_bytes(self.comm.hosts, rank)  # None: every op inline
        self._completer = Completer(f"torch/{group_name}")
        # Its flight records under torch's group name and global ranks, as torch's own dumps.
        flight.name_as(self.comm, group_name, global_ranks if global_ranks else range(size))

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

    def _pending_work(self, native, result):
        """The Work of `native`, an op submitted with async_op=True: completed
        by the group's completion thread, or by wait() on the op itself."""
        return Work(result, pending=self._completer.add(native), native=native)

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
            code = OP_CODES[int(REDOP.SUM)]
        else:
            try:  # the common case, kept short: a few us of Python in all
                code = OP_CODES[opts.reduceOp.op.value]
            except (AttributeError, KeyError):
                factor = premul_factor(opts)
                if factor is not None:
                    return self._run(tensors, self._allreduce_list, tensors, "sum", factor)
                code = op_code(op_name(opts))
        if len(tensors) == 1:
            t = tensors[0]
            name = DTYPE_NAMES.get(t.dtype)
            if name is not None and t.layout == torch.strided and t.is_cpu and t.is_contiguous():
                n, overlap = t.numel(), self._overlap  # (_overlapped, inlined: 0.1 us of a 6 us call)
                if overlap is None or n * t.element_size() < overlap:
                    try:  # blocking, on the calling thread: the tensor's memory as it is
                        self.comm.allreduce(pycomm.Memory(t.data_ptr(), n, name), code, timeout=self._timeout)
                    except CommError as e:
                        return Work(tensors, error=e)
                    return _DONE if _SYNC_KNOWN and opts is not None and not opts.asyncOp else Work(tensors)
                try:
                    native = self.comm.allreduce(host_view(t.detach()), code, async_op=True, timeout=self._timeout)
                except CommError as e:
                    return Work(tensors, error=e)
                return self._pending_work(native, tensors)
        return self._run(tensors, self._allreduce_list, tensors, OP_NAMES[code])

    def _allreduce_list(self, tensors, op, factor=None):
        for t in tensors:
            if t.layout == torch.sparse_coo:
                t.copy_(self._sparse_sum(t, op))
                continue
            if factor is not None:
                t.detach().mul_(factor)  # all_reduce overwrites t: scaled in place
            c = reducible(t, op)
            self.comm.allreduce(c, native_op(t, op))
            write_back(t, c)

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
        self.comm.allgather(movable(pad_vals).reshape(-1), out=movable(all_vals).reshape(-1))
        keep = [int(n) for n in counts]
        idx = torch.cat([all_idx[r, :, :n] for r, n in enumerate(keep)], dim=1)
        vals = torch.cat([all_vals[r, :n] for r, n in enumerate(keep)])
        return torch.sparse_coo_tensor(idx, vals, t.shape).coalesce()

    def allreduce_coalesced(self, tensors, opts=None):
        op = "sum" if opts is None else op_name(opts)
        return self._run(tensors, self._allreduce_coalesced, tensors, op, premul_factor(opts))

    def _allreduce_coalesced(self, tensors, op, factor):
        if not tensors:
            return
        check_same(tensors, "allreduce_coalesced")
        flats = [reducible(t, op).reshape(-1) for t in tensors]
        buf = torch.cat(flats)
        if factor is not None:
            buf.mul_(factor)
        self.comm.allreduce(host_view(buf), native_op(tensors[0], op))
        offset = 0
        for t, f in zip(tensors, flats):
            write_back(t, buf[offset:offset + f.numel()])
            offset += f.numel()

    def reduce(self, tensors, opts):
        op, root = op_name(opts), opts.rootRank
        return self._run(tensors, self._reduce, tensors, op, premul_factor(opts), root)

    def _reduce(self, tensors, op, factor, root):
        for t in tensors:
            c = reducible(scaled(t, factor), op)
            self.comm.reduce(c, root, native_op(t, op))  # into c at the root; c is only read elsewhere
            if self._rank == root:
                write_back(t, c)

    def reduce_scatter(self, outputs, inputs, opts=None):
        op = "sum" if opts is None else op_name(opts)
        return self._run(outputs, self._reduce_scatter_lists, outputs, inputs, op, premul_factor(opts))

    def _reduce_scatter_lists(self, outputs, inputs, op, factor):
        # inputs[i][r] goes to rank r; unequal sizes (the same on every rank)
        # take the uneven form.
        for out, ins in zip(outputs, inputs):
            if len(ins) != self._size:
                raise ValueError(f"reduce_scatter: need {self._size} input tensors, got {len(ins)}")
            check_same([out, *ins], "reduce_scatter")
            if ins[self._rank].numel() != out.numel():
                raise ValueError(f"reduce_scatter: input {self._rank} has {ins[self._rank].numel()} elements, "
                                 f"the output {out.numel()}")
            buf = reducible(scaled(torch.cat([i.reshape(-1) for i in ins]), factor), op)
            c = reducible(out, op)
            counts = None
            if any(i.numel() != out.numel() for i in ins):
                counts = [i.numel() * per_element(buf, out) for i in ins]
            self.comm.reduce_scatter(buf.reshape(-1), native_op(out, op), out=c.reshape(-1), counts=counts)
            write_back(out, c)

    def _reduce_scatter_base(self, output, input, opts=None):
        op = "sum" if opts is None else op_name(opts)
        return self._run([output], self._reduce_scatter_tensor, output, input, op, premul_factor(opts))

    reduce_scatter_single = _reduce_scatter_base

    def _reduce_scatter_tensor(self, output, input, op, factor=None):
        if output.dtype != input.dtype:
            raise TypeError(f"reduce_scatter_tensor: output is {output.dtype}, input {input.dtype}")
        if input.numel() != output.numel() * self._size:
            raise ValueError(f"reduce_scatter_tensor: input has {input.numel()} elements, "
                             f"need {self._size} x {output.numel()}")
        c = reducible(output, op)
        x = reducible(scaled(input, factor), op)
        self.comm.reduce_scatter(host_view(x.reshape(-1)), native_op(output, op), out=host_view(c.reshape(-1)))
        write_back(output, c)

    def reduce_scatter_tensor_coalesced(self, outputs, inputs, opts=None):
        op = "sum" if opts is None else op_name(opts)
        factor = premul_factor(opts)

        def run():
            for o, i in zip(outputs, inputs):
                self._reduce_scatter_tensor(o, i, op, factor)
        return self._run(outputs, run)

    # -- data movement -----------------------------------------------------------

    def broadcast(self, tensors, opts=None):
        if isinstance(tensors, torch.Tensor):
            tensors = [tensors]
        root = 0 if opts is None else opts.rootRank
        if len(tensors) == 1:
            t = tensors[0]
            if t.dtype in NATIVE and t.is_contiguous() and not t.requires_grad:
                try:
                    self.comm.broadcast(host_view(t), root)
                except CommError as e:
                    return Work(tensors, error=e)
                return Work(tensors)
        return self._run(tensors, self._broadcast, tensors, root)

    def _broadcast(self, tensors, root):
        for t in tensors:
            c = movable(t)
            self.comm.broadcast(host_view(c), root)
            write_back(t, c)

    def _allgather_base(self, output, input, opts=None):
        return self._run([output], self._allgather_tensor, output, input)

    all_gather_single = _allgather_base

    def _allgather_tensor(self, output, input):
        if output.dtype != input.dtype:
            raise TypeError(f"all_gather_into_tensor: output is {output.dtype}, input {input.dtype}")
        if output.numel() != input.numel() * self._size:
            raise ValueError(f"all_gather_into_tensor: output has {output.numel()} elements, "
                             f"need {self._size} x {input.numel()}")
        c = movable(output)
        self.comm.allgather(host_view(movable(input).reshape(-1)), out=host_view(c.reshape(-1)))
        write_back(output, c)

    def allgather_into_tensor_coalesced(self, outputs, inputs, opts=None):
        def run():
            for o, i in zip(outputs, inputs):
                self._allgather_tensor(o, i)
        return self._run(outputs, run)

    def allgather(self, output_lists, inputs, opts=None):
        return self._run(output_lists, self._allgather_lists, output_lists, inputs)

    def _allgather_lists(self, output_lists, inputs):
        # outs[r] receives rank r's input; unequal sizes take the uneven form.
        for outs, x in zip(output_lists, inputs):
            if len(outs) != self._size:
                raise ValueError(f"all_gather: need {self._size} output tensors, got {len(outs)}")
            check_same([x, *outs], "all_gather")
            if outs[self._rank].numel() != x.numel():
                raise ValueError(f"all_gather: output {self._rank} has {outs[self._rank].numel()} elements, "
                                 f"the input {x.numel()}")
            c = movable(x).reshape(-1)
            per = per_element(c, x)
            counts = [o.numel() * per for o in outs]
            whole = c.new_empty(sum(counts))
            even = all(k == counts[0] for k in counts)
            self.comm.allgather(c, out=whole, counts=None if even else counts)
            split_into(outs, whole, counts)

    def allgather_coalesced(self, output_lists, inputs, opts=None):
        # output_lists[r][i] receives rank r's inputs[i]. One list all_gather per input.
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
        for i, x in enumerate(inputs):
            c = movable(x).reshape(-1)
            if self._rank != root:
                self.comm.gather(c, root)
                continue
            outs = output_lists[i]
            if len(outs) != self._size:
                raise ValueError(f"gather: need {self._size} output tensors at the root, got {len(outs)}")
            if any(o.numel() != x.numel() for o in outs):
                raise ValueError("gather: every output must have as many elements as the input")
            whole = self.comm.gather(c, root, out=c.new_empty(c.numel() * self._size))
            split_into(outs, whole, [c.numel()] * self._size)

    def scatter(self, outputs, input_lists, opts):
        root = opts.rootRank
        return self._run(outputs, self._scatter, outputs, input_lists, root)

    def _scatter(self, outputs, input_lists, root):
        for i, out in enumerate(outputs):
            c = movable(out).reshape(-1)
            buf = None
            if self._rank == root:
                ins = input_lists[i]
                if len(ins) != self._size:
                    raise ValueError(f"scatter: need {self._size} input tensors at the root, got {len(ins)}")
                if any(t.numel() != out.numel() for t in ins):
                    raise ValueError("scatter: every input must have as many elements as the output")
                check_same([out, *ins], "scatter")
                buf = torch.cat([movable(t).reshape(-1) for t in ins])
            self.comm.scatter(buf, root, out=c)
            write_back(out, c)

    def alltoall_base(self, output, input, output_split_sizes, input_split_sizes, opts=None):
        return self._run([output], self._alltoall_single, output, input,
                         list(output_split_sizes), list(input_split_sizes))

    def _alltoall_single(self, output, input, out_splits, in_splits):
        # Splits count rows (the first dimension); none: an even split.
        n = self._size
        if output.dtype != input.dtype:
            raise TypeError(f"all_to_all_single: output is {output.dtype}, input {input.dtype}")
        x = movable(input).reshape(-1)
        y = movable(output)
        if not in_splits and not out_splits:
            self.comm.alltoall(host_view(x), out=host_view(y.reshape(-1)))
        else:
            per = per_element(x, input)
            send = split_counts(input, in_splits, n, "input")
            recv = split_counts(output, out_splits, n, "output")
            self.comm.alltoall(host_view(x), out=host_view(y.reshape(-1)), send_counts=[k * per for k in send],
                               recv_counts=[k * per for k in recv])
        write_back(output, y)

    def alltoall(self, outputs, inputs, opts=None):
        def run():
            n = self._size
            if len(inputs) != n or len(outputs) != n:
                raise ValueError(f"all_to_all: need {n} input and {n} output tensors")
            check_same([*inputs, *outputs], "all_to_all")
            flat_in = torch.cat([movable(t).reshape(-1) for t in inputs])
            per = per_element(flat_in, inputs[0])
            recv = [t.numel() * per for t in outputs]
            flat_out = flat_in.new_empty(sum(recv))
            self.comm.alltoall(flat_in, out=flat_out, send_counts=[t.numel() * per for t in inputs],
                               recv_counts=recv)
            split_into(outputs, flat_out, recv)
        return self._run(outputs, run)

    def barrier(self, opts=None):
        return self._run([], self.comm.barrier)

    def monitored_barrier(self, timeout=None, wait_all_ranks=False):
        """A barrier that names the ranks missing from it (rank 0 raises
        "Rank N failed to pass monitoredBarrier ..."); through the store, so it
        works while the communicator is stuck (monitored_barrier.py).
        timeout: a timedelta or seconds; None = the group's."""
        self._monitored_barrier(self._timeout if timeout is None else timeout, wait_all_ranks)

    # -- point to point (the communicator's point-to-point engine) -------------------

    def send(self, tensors, dst, tag=0):
        t = one_tensor(tensors, "send")
        c = t if t.is_cpu and t.is_contiguous() else t.cpu().contiguous()
        return self._p2p_work(P2PWork(tensors, self.comm.isend(byte_view(c), dst, tag, timeout=self._timeout),
                                      keep=c))

    def recv(self, tensors, src, tag=0):
        return self._recv(tensors, src, tag)

    def recv_anysource(self, tensors, tag=0):
        return self._recv(tensors, None, tag)

    def _recv(self, tensors, src, tag):
        t = one_tensor(tensors, "recv")
        direct = t.is_cpu and t.is_contiguous()
        c = t if direct else torch.empty(t.shape, dtype=t.dtype)  # copied into t once it came
        native = self.comm.irecv(byte_view(c), src, tag, timeout=self._timeout)
        return self._p2p_work(P2PWork(tensors, native, keep=c, then=None if direct else (lambda: t.copy_(c))))

    def _p2p_work(self, work):
        if self._batch is not None:  # coalescing: the batch's Work waits on it
            self._batch_works.append(work)
        return work

    # -- coalescing and lifetime ---------------------------------------------------

    @property
    def supports_coalescing(self):
        return True

    def _start_coalescing(self, device=None):
        """Point-to-point calls from here to _end_coalescing are posted
        together then (batch_isend_irecv, pipeline schedules); collectives
        run as they are called."""
        if self._batch is not None:
            raise ValueError("pycomm: coalescing blocks do not nest")
        self._batch, self._batch_works = self.comm.group(), []
        self._batch.__enter__()

    def _end_coalescing(self, device=None):
        batch, self._batch = self._batch, None
        if batch is None:
            raise ValueError("pycomm: _end_coalescing without _start_coalescing")
        batch.__exit__(None, None, None)
        return P2PWork([], self._batch_works)

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

    def shutdown(self):
        self.comm.close()  # finishes the queued ops, so the completer can stop
        self._completer.close()

    def shrink(self, timeout=None):
        """After a rank died: a new "pycomm" group of the survivors
        (Communicator.shrink), for torchft-style loops that abort a group and
        go on with a new one; use it directly (its methods, or
        DistributedDataParallel(process_group=...)): torch.distributed's
        default world still counts the dead. This group stays failed."""
        comm = self.comm.shrink(timeout)
        mine = self._global_ranks[self._rank] if self._global_ranks else self._rank
        ranks = comm.allgather(np.array([mine], np.int64)).tolist()  # the survivors' global ranks
        name = f"{self._group_name}/shrink{len(ranks)}of{self._size}"
        store = dist.PrefixStore(f"pycomm/{name}/", self._c10d_store)
        return ProcessGroupPycomm(store, comm.rank, comm.size, self._timeout, group_name=name,
                                  global_ranks=ranks, comm=comm)


def create(dist_options, backend_options=None):
    """The creator registered with torch (extended API: gives the group's name)."""
    store = dist_options.store
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    if attempt is not None:
        # torchrun restarts the workers against the same agent store, where the
        # dead attempt's rendezvous keys (its shared memory names) remain.
        store = dist.PrefixStore(f"pycomm/attempt{attempt}/", store)
    return ProcessGroupPycomm(store, dist_options.group_rank, dist_options.group_size,
                              dist_options.timeout, group_name=dist_options.group_id,
                              global_ranks=list(dist_options.global_ranks_in_group))
