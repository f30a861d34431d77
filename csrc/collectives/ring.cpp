// Ring phases: each step every rank sends one chunk to rank+1 while it
// receives one from rank-1, so every link carries (n-1)/n of the data once
// per phase, the bandwidth-optimal schedule of Patarasuk & Yuan. Also the
// direct reduction the small-payload paths share.
#include <vector>

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

std::vector<size_t> prefix_sums(const uint64_t* counts, int n) {
  std::vector<size_t> s(n + 1, 0);
  for (int p = 0; p < n; ++p) s[p + 1] = s[p] + counts[p];
  return s;
}

void direct_reduce(OpContext& ctx, const BlockFor& block_for, uint8_t* out, size_t count,
                   const CountFor& count_for) {
  const int n = ctx.size(), r = ctx.rank();
  const size_t bytes = count * ctx.elem();
  uint8_t* gathered = ctx.scratch.get(n * bytes);
  kernels::copy(gathered + r * bytes, block_for(r), bytes);  // a copy: out may alias it
  std::vector<SendSpec> sends;
  std::vector<RecvSpec> recvs;
  for (int p = 0; p < n; ++p) {
    if (p == r) continue;
    sends.push_back({p, block_for(p), count_for ? count_for(p) * ctx.elem() : bytes});
    recvs.push_back({p, bytes, Sink{gathered + p * bytes}});
  }
  ctx.exchange(sends.data(), sends.size(), recvs.data(), recvs.size());
  reduce_blocks(ctx, gathered, out, count);
}

void reduce_blocks(OpContext& ctx, const uint8_t* gathered, uint8_t* out, size_t count) {
  const int n = ctx.size();
  const size_t bytes = count * ctx.elem();
  if (n == 1) {
    kernels::copy(out, gathered, bytes);
  } else {
    kernels::reduce(out, gathered, gathered + bytes, count, ctx.stamp.dtype, ctx.stamp.op);
    for (int p = 2; p < n; ++p)
      kernels::reduce(out, out, gathered + p * bytes, count, ctx.stamp.dtype, ctx.stamp.op);
  }
  finish_avg(ctx, out, count);
}

}  // namespace pycomm
