// The operations on GPU buffers of ranks on one host (OpInfo::ipc): every
// rank's buffers are mapped (device.h, IpcView), so each op is copies and
// reduction kernels on this rank's stream, pulling what it needs.
#include <algorithm>
#include <vector>

#include "collectives.h"
#include "device.h"
#include "../cuda/cuda_kernels.h"
#include "../cuda/device_memory.h"

namespace pycomm {
namespace {

// Every rank's input at byte `offset`, `len` elements, reduced in rank order
// into each of dsts: one pass when one launch takes every rank.
void reduce_into(IpcView& v, std::vector<void*> dsts, size_t offset, size_t len) {
  if (len == 0) return;
  const int n = v.ctx.size();
  const DType dt = v.ctx.stamp.dtype;
  const RedOp op = v.ctx.stamp.op;
  std::vector<const void*> srcs(n);
  for (int p = 0; p < n; ++p) srcs[p] = v.ins[p] + offset;
  if (n <= cuda::kMaxReduceSources) {
    cuda::reduce_n_to(dsts.data(), static_cast<int>(dsts.size()), srcs.data(), n, len, dt, op, n, v.stream);
    return;
  }
  // More ranks than one launch takes: fold groups into dsts[0] (each later
  // launch folding it in first), then copy.
  const RedOp fold = op == RedOp::kAvg ? RedOp::kSum : op;
  int done = cuda::kMaxReduceSources;
  cuda::reduce_n(dsts[0], srcs.data(), done, len, dt, fold, v.stream);
  while (done < n) {
    const int more = std::min(n - done, cuda::kMaxReduceSources - 1);
    std::vector<const void*> group{dsts[0]};
    group.insert(group.end(), srcs.begin() + done, srcs.begin() + done + more);
    cuda::reduce_n(dsts[0], group.data(), static_cast<int>(group.size()), len, dt, fold, v.stream);
    done += more;
  }
  if (op == RedOp::kAvg) cuda::divide(dsts[0], len, dt, n, v.stream);
  for (size_t d = 1; d < dsts.size(); ++d) cuda::copy_async(dsts[d], dsts[0], len * v.ctx.elem(), v.stream);
}

}  // namespace

// Slice r, reduced once, written into every rank's output.
void ipc_allreduce(IpcView& v) {
  const int n = v.ctx.size(), r = v.ctx.rank();
  const size_t es = v.ctx.elem();
  Chunks ch{v.args.count, n};
  const size_t at = ch.offset(r) * es;
  std::vector<void*> dsts{v.outs[r] + at};
  for (int p = 0; p < n; ++p)
    if (p != r) dsts.push_back(v.outs[p] + at);
  reduce_into(v, dsts, at, ch.length(r));
}

void ipc_reduce_scatter(IpcView& v) {
  reduce_into(v, {v.outs[v.ctx.rank()]}, v.ctx.rank() * v.args.count * v.ctx.elem(), v.args.count);
}

void ipc_allgather(IpcView& v) {
  const int n = v.ctx.size(), r = v.ctx.rank();
  const size_t bytes = v.args.count * v.ctx.elem();
  uint8_t* out = v.outs[r];
  for (int p = 0; p < n; ++p)
    if (p != r || v.ins[r] != out + r * bytes) cuda::copy_async(out + p * bytes, v.ins[p], bytes, v.stream);
}

void ipc_broadcast(IpcView& v) {
  const int r = v.ctx.rank(), root = v.args.root;
  const size_t bytes = v.args.count * v.ctx.elem();
  if (r != root || v.ins[r] != v.outs[r]) cuda::copy_async(v.outs[r], v.ins[root], bytes, v.stream);
}

// At the root: every rank's block, in rank order.
void ipc_gather(IpcView& v) {
  const int n = v.ctx.size(), r = v.ctx.rank();
  if (r != v.args.root) return;
  const size_t bytes = v.args.count * v.ctx.elem();
  for (int p = 0; p < n; ++p)
    if (v.ins[p] != v.outs[r] + p * bytes) cuda::copy_async(v.outs[r] + p * bytes, v.ins[p], bytes, v.stream);
}

// Every rank pulls its block of the root's input.
void ipc_scatter(IpcView& v) {
  const int r = v.ctx.rank();
  const size_t bytes = v.args.count * v.ctx.elem();
  const uint8_t* src = v.ins[v.args.root] + r * bytes;
  if (src != v.outs[r]) cuda::copy_async(v.outs[r], src, bytes, v.stream);
}

// The root reduces every rank's input in rank order, in one pass.
void ipc_reduce(IpcView& v) {
  if (v.ctx.rank() == v.args.root) reduce_into(v, {v.outs[v.ctx.rank()]}, 0, v.args.count);
}

// Every rank pulls block r of every rank's input.
void ipc_alltoall(IpcView& v) {
  const int n = v.ctx.size(), r = v.ctx.rank();
  const size_t bytes = v.args.count * v.ctx.elem();
  for (int p = 0; p < n; ++p) cuda::copy_async(v.outs[r] + p * bytes, v.ins[p] + r * bytes, bytes, v.stream);
}

void ipc_allgatherv(IpcView& v) {
  const int n = v.ctx.size(), r = v.ctx.rank();
  const size_t es = v.ctx.elem();
  const std::vector<size_t> at = prefix_sums(v.args.counts, n);
  for (int p = 0; p < n; ++p)
    if (v.ins[p] && v.ins[p] != v.outs[r] + at[p] * es)
      cuda::copy_async(v.outs[r] + at[p] * es, v.ins[p], v.args.counts[p] * es, v.stream);
}

void ipc_reduce_scatterv(IpcView& v) {
  const int r = v.ctx.rank();
  const std::vector<size_t> at = prefix_sums(v.args.counts, v.ctx.size());
  reduce_into(v, {v.outs[r]}, at[r] * v.ctx.elem(), v.args.counts[r]);
}

}  // namespace pycomm
