// Reduce-scatter: direct for small blocks (each rank receives its block from
// every peer and reduces in rank order), else the ring's first phase with two
// scratch blocks alternating between receive-reduce and send.
#include "collectives.h"
#include "../kernels/reduce.h"

namespace pycomm {

void reduce_scatter(OpContext& ctx, const void* in_, void* out_, size_t count) {
  auto* in = static_cast<const uint8_t*>(in_);
  auto* out = static_cast<uint8_t*>(out_);
  const int n = ctx.size();
  const size_t bytes = count * ctx.elem();
  if (n == 1) {
    if (out != in) kernels::copy(out, in, bytes);
    finish_avg(ctx, out, count);
    return;
  }
  if (bytes <= ctx.tuning.direct_max_bytes)
    return direct_reduce(ctx, [&](int p) { return in + p * bytes; }, out, count);
  uint8_t* tmp = ctx.scratch.get(2 * bytes);
  ring_reduce_scatter(ctx, in, Chunks{n * count, n}, [&](int step, int) {
    return step == n - 2 ? out : tmp + (step % 2) * bytes;
  });
  finish_avg(ctx, out, count);
}

}  // namespace pycomm
