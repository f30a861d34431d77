// Scatter: the root sends block p straight to rank p, to all of them at once;
// each byte leaves the root once, every other rank receives one block. Large
// blocks go `direct` as gather's: the root writes half of each.
#include <vector>

#include "collectives.h"
#include "../kernels/reduce.h"

namespace pycomm {

const char* scatter_algorithm(size_t, int size, const Tuning&) { return size == 1 ? "local" : "direct"; }

void scatter(OpContext& ctx, const void* in_, void* out, size_t count, int root) {
  const int n = ctx.size(), r = ctx.rank();
  const size_t bytes = count * ctx.elem();
  if (r != root) {
    RecvSpec rv{root, bytes, Sink{static_cast<uint8_t*>(out)}};
    rv.direct = rv.split = bytes >= ctx.tr.payload_split_min();
    return ctx.exchange(nullptr, 0, &rv, 1);
  }
  auto* in = static_cast<const uint8_t*>(in_);
  if (out != in + r * bytes) kernels::copy(out, in + r * bytes, bytes);
  std::vector<SendSpec> sends;
  for (int k = 1; k < n; ++k) {
    const int p = ctx.peer(k);
    sends.push_back({p, in + p * bytes, bytes});
    sends.back().direct = bytes >= ctx.tr.payload_split_min();
  }
  ctx.exchange(sends.data(), sends.size(), nullptr, 0);
}

}  // namespace pycomm
