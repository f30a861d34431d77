// Allgather: direct for small blocks (every rank sends its block to every
// peer at once), else the ring's second phase.
#include <cstring>
#include <vector>

#include "collectives.h"
#include "../kernels/reduce.h"

namespace pycomm {

void allgather(OpContext& ctx, const void* in, void* out_, size_t count) {
  auto* out = static_cast<uint8_t*>(out_);
  const int n = ctx.size(), r = ctx.rank();
  const size_t bytes = count * ctx.elem();
  uint8_t* own = out + r * bytes;
  if (in != own) kernels::copy(own, in, bytes);
  if (n == 1) return;
  if (bytes > ctx.tuning.direct_max_bytes) return ring_allgather(ctx, out, Chunks{n * count, n});
  std::vector<SendSpec> sends;
  std::vector<RecvSpec> recvs;
  for (int p = 0; p < n; ++p) {
    if (p == r) continue;
    sends.push_back({p, own, bytes});
    recvs.push_back({p, bytes, Sink{out + p * bytes}});
  }
  ctx.exchange(sends.data(), sends.size(), recvs.data(), recvs.size());
}

}  // namespace pycomm
