// Allreduce: a one-step direct exchange for small payloads (latency: every
// rank sends its vector to every peer and reduces all of them in rank order),
// else the ring, reduce-scatter then allgather (bandwidth: 2(n-1)/n of the
// payload per link).
#include "collectives.h"
#include "../kernels/reduce.h"

namespace pycomm {

const char* allreduce_algorithm(size_t bytes, int size, const Tuning& tuning) {
  return size == 1 ? "local" : bytes <= tuning.direct_max_bytes ? "direct" : "ring";
}

void allreduce(OpContext& ctx, const void* in_, void* out_, size_t count) {
  auto* in = static_cast<const uint8_t*>(in_);
  auto* out = static_cast<uint8_t*>(out_);
  const size_t es = ctx.elem(), bytes = count * es;
  if (ctx.size() == 1) {
    if (out != in) kernels::copy(out, in, bytes);
    finish_avg(ctx, out, count);
    return;
  }
  if (bytes <= ctx.tuning.direct_max_bytes)
    return direct_reduce(ctx, [in](int) { return in; }, out, count);
  Chunks chunks{count, ctx.size()};
  ring_reduce_scatter(ctx, in, chunks, [&](int, int c) { return out + chunks.offset(c) * es; });
  int mine = ctx.rank();
  finish_avg(ctx, out + chunks.offset(mine) * es, chunks.length(mine));
  ring_allgather(ctx, out, chunks);
}

}  // namespace pycomm
