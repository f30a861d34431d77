// Allreduce: a one-step direct exchange for small payloads (latency: every
// rank sends its vector to every peer and reduces all of them in rank order),
// else the ring, reduce-scatter then allgather (bandwidth: 2(n-1)/n of the
// payload per link).
#include <cstring>
#include <vector>

#include "collectives.h"
#include "../kernels/reduce.h"

namespace pycomm {
namespace {

void direct_allreduce(OpContext& ctx, const uint8_t* in, uint8_t* out, size_t bytes) {
  const int n = ctx.size(), r = ctx.rank();
  uint8_t* gathered = ctx.scratch.get(n * bytes);
  kernels::copy(gathered + r * bytes, in, bytes);  // a copy: out may alias in
  std::vector<SendSpec> sends;
  std::vector<RecvSpec> recvs;
  std::vector<const uint8_t*> srcs(n);
  for (int p = 0; p < n; ++p) {
    srcs[p] = gathered + p * bytes;
    if (p == r) continue;
    sends.push_back({p, in, bytes});
    recvs.push_back({p, bytes, Sink{gathered + p * bytes}});
  }
  ctx.exchange(sends.data(), sends.size(), recvs.data(), recvs.size());
  reduce_in_rank_order(ctx, srcs.data(), out, bytes / ctx.elem());
}

}  // namespace

void allreduce(OpContext& ctx, const void* in_, void* out_, size_t count) {
  auto* in = static_cast<const uint8_t*>(in_);
  auto* out = static_cast<uint8_t*>(out_);
  const size_t es = ctx.elem(), bytes = count * es;
  if (ctx.size() == 1) {
    if (out != in) kernels::copy(out, in, bytes);
    finish_avg(ctx, out, count);
    return;
  }
  if (bytes <= ctx.tuning.direct_max_bytes) return direct_allreduce(ctx, in, out, bytes);
  Chunks chunks{count, ctx.size()};
  ring_reduce_scatter(ctx, in, chunks, [&](int, int c) { return out + chunks.offset(c) * es; });
  int mine = ctx.rank();
  finish_avg(ctx, out + chunks.offset(mine) * es, chunks.length(mine));
  ring_allgather(ctx, out, chunks);
}

}  // namespace pycomm
