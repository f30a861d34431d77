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

const char* algorithm_name(Coll coll, size_t bytes, int size, const Tuning& tuning) {
  // The same tests as allreduce.cpp, reduce_scatter.cpp, allgather.cpp,
  // broadcast.cpp and barrier.cpp (bytes: one rank's block).
  if (size == 1) return "local";
  const bool small = bytes <= tuning.direct_max_bytes;
  switch (coll) {
    case Coll::kAllreduce:
    case Coll::kReduceScatter:
    case Coll::kAllgather: return small ? "direct" : "ring";
    case Coll::kBroadcast: return small || size == 2 ? "direct" : "chain";
    case Coll::kBarrier: return "dissemination";
    case Coll::kAllreduceInt8:
    case Coll::kReduceScatterInt8: return "int8 two-shot";
  }
  return "?";
}

void finish_avg(OpContext& ctx, uint8_t* buf, size_t count) {
  if (ctx.stamp.op == RedOp::kAvg) kernels::divide(buf, count, ctx.stamp.dtype, ctx.size());
}

void direct_reduce(OpContext& ctx, const BlockFor& block_for, uint8_t* out, size_t count) {
  const int n = ctx.size(), r = ctx.rank();
  const size_t bytes = count * ctx.elem();
  uint8_t* gathered = ctx.scratch.get(n * bytes);
  kernels::copy(gathered + r * bytes, block_for(r), bytes);  // a copy: out may alias it
  std::vector<SendSpec> sends;
  std::vector<RecvSpec> recvs;
  for (int p = 0; p < n; ++p) {
    if (p == r) continue;
    sends.push_back({p, block_for(p), bytes});
    recvs.push_back({p, bytes, Sink{gathered + p * bytes}});
  }
  ctx.exchange(sends.data(), sends.size(), recvs.data(), recvs.size());
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
