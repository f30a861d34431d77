// Ring phases: each step every rank sends one chunk to rank+1 while it
// receives one from rank-1, so every link carries (n-1)/n of the data once
// per phase, the bandwidth-optimal schedule of Patarasuk & Yuan.
#include "collectives.h"
#include "../kernels/reduce.h"

namespace pycomm {

void ring_reduce_scatter(OpContext& ctx, const uint8_t* in, const Chunks& chunks, const StepDst& dst) {
  const int n = ctx.size(), r = ctx.rank();
  const size_t es = ctx.elem();
  auto wrap = [n](int c) { return ((c % n) + n) % n; };
  for (int s = 0; s < n - 1; ++s) {
    int send_c = wrap(r - s - 1), recv_c = wrap(r - s - 2);
    const uint8_t* src = s == 0 ? in + chunks.offset(send_c) * es : dst(s - 1, send_c);
    Sink sink{dst(s, recv_c), in + chunks.offset(recv_c) * es};
    ctx.sendrecv(ctx.peer(1), src, chunks.length(send_c) * es, ctx.peer(-1),
                 chunks.length(recv_c) * es, sink);
  }
}

void ring_allgather(OpContext& ctx, uint8_t* buf, const Chunks& chunks) {
  const int n = ctx.size(), r = ctx.rank();
  const size_t es = ctx.elem();
  auto wrap = [n](int c) { return ((c % n) + n) % n; };
  for (int s = 0; s < n - 1; ++s) {
    int send_c = wrap(r - s), recv_c = wrap(r - s - 1);
    Sink sink{buf + chunks.offset(recv_c) * es};
    ctx.sendrecv(ctx.peer(1), buf + chunks.offset(send_c) * es, chunks.length(send_c) * es,
                 ctx.peer(-1), chunks.length(recv_c) * es, sink);
  }
}

void finish_avg(OpContext& ctx, uint8_t* buf, size_t count) {
  if (ctx.stamp.op == RedOp::kAvg) kernels::divide(buf, count, ctx.stamp.dtype, ctx.size());
}

void reduce_in_rank_order(OpContext& ctx, const uint8_t* const* srcs, uint8_t* out, size_t count) {
  const int n = ctx.size();
  if (n == 1) {
    if (out != srcs[0]) kernels::copy(out, srcs[0], count * ctx.elem());
  } else {  // out must not alias srcs[2..]: it is written before they are read
    kernels::reduce(out, srcs[0], srcs[1], count, ctx.stamp.dtype, ctx.stamp.op);
    for (int p = 2; p < n; ++p) kernels::reduce(out, out, srcs[p], count, ctx.stamp.dtype, ctx.stamp.op);
  }
  finish_avg(ctx, out, count);
}

}  // namespace pycomm
