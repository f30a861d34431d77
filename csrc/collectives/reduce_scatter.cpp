// Reduce-scatter: direct for small blocks (each rank receives its block from
// every peer and reduces in rank order), else the ring's first phase with two
// scratch blocks alternating between receive-reduce and send.
#include <cstring>
#include <vector>

#include "collectives.h"
#include "../kernels/reduce.h"

namespace pycomm {

void reduce_scatter(OpContext& ctx, const void* in_, void* out_, size_t count) {
  auto* in = static_cast<const uint8_t*>(in_);
  auto* out = static_cast<uint8_t*>(out_);
  const int n = ctx.size(), r = ctx.rank();
  const size_t bytes = count * ctx.elem();
  if (n == 1) {
    if (out != in) kernels::copy(out, in, bytes);
    finish_avg(ctx, out, count);
    return;
  }
  if (bytes <= ctx.tuning.direct_max_bytes) {
    uint8_t* gathered = ctx.scratch.get(n * bytes);
    kernels::copy(gathered + r * bytes, in + r * bytes, bytes);
    std::vector<SendSpec> sends;
    std::vector<RecvSpec> recvs;
    std::vector<const uint8_t*> srcs(n);
    for (int p = 0; p < n; ++p) {
      srcs[p] = gathered + p * bytes;
      if (p == r) continue;
      sends.push_back({p, in + p * bytes, bytes});
      recvs.push_back({p, bytes, Sink{gathered + p * bytes}});
    }
    ctx.exchange(sends.data(), sends.size(), recvs.data(), recvs.size());
    reduce_in_rank_order(ctx, srcs.data(), out, count);
    return;
  }
  uint8_t* tmp = ctx.scratch.get(2 * bytes);
  ring_reduce_scatter(ctx, in, Chunks{n * count, n}, [&](int step, int) {
    return step == n - 2 ? out : tmp + (step % 2) * bytes;
  });
  finish_avg(ctx, out, count);
}

}  // namespace pycomm
