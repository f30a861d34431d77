// Broadcast: the root sends to every peer directly for small payloads (one
// step); large payloads flow down a chain root -> root+1 -> ... in which each
// rank forwards bytes as they arrive, so every link carries the payload once.
#include <vector>

#include "collectives.h"
#include "../kernels/reduce.h"

namespace pycomm {

const char* broadcast_algorithm(size_t bytes, int size, const Tuning& tuning) {
  return size == 1 ? "local" : bytes <= tuning.direct_max_bytes || size == 2 ? "direct" : "chain";
}

void broadcast(OpContext& ctx, const void* in, void* out, size_t count, int root) {
  auto* buf = static_cast<uint8_t*>(out);
  const int n = ctx.size(), r = ctx.rank();
  const size_t bytes = count * ctx.elem();
  if (r == root && in && in != out) kernels::copy(buf, in, bytes);
  if (n == 1) return;
  if (bytes <= ctx.tuning.direct_max_bytes || n == 2) {  // as broadcast_algorithm says
    if (r != root) {
      RecvSpec rv{root, bytes, Sink{buf}};
      return ctx.exchange(nullptr, 0, &rv, 1);
    }
    std::vector<SendSpec> sends;
    for (int p = 0; p < n; ++p)
      if (p != root) sends.push_back({p, buf, bytes});
    return ctx.exchange(sends.data(), sends.size(), nullptr, 0);
  }
  const int pos = (r - root + n) % n;  // place in the chain
  if (pos == 0) {
    SendSpec s{ctx.peer(1), buf, bytes};
    return ctx.exchange(&s, 1, nullptr, 0);
  }
  RecvSpec rv{ctx.peer(-1), bytes, Sink{buf}};
  if (pos == n - 1) return ctx.exchange(nullptr, 0, &rv, 1);
  SendSpec fwd{ctx.peer(1), buf, bytes, &rv.done};
  ctx.exchange(&fwd, 1, &rv, 1);
}

}  // namespace pycomm
