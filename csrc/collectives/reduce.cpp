// Reduce to a root. Small payloads: every rank sends its vector to the root,
// which reduces them in rank order (one step). Large payloads: a pipelined
// chain root+1 -> root+2 -> ... -> root, each rank reducing its own vector
// into the partial sum as it streams through and forwarding it at once, so
// every link carries the payload once, the root receives it once, and each
// rank reduces one vector's worth. Why a chain and not reduce-scatter then
// gather: that moves 2(n-1)/n of the payload into the root instead of 1, and
// a binary tree makes the root receive (and reduce) twice the payload; the
// chain's cost, n-1 pipeline fills, is small beside the payload above
// direct_max_bytes.
#include <vector>

#include "collectives.h"
#include "../kernels/reduce.h"

namespace pycomm {

const char* reduce_algorithm(size_t bytes, int size, const Tuning& tuning) {
  return size == 1 ? "local" : bytes <= tuning.direct_max_bytes ? "direct" : "chain";
}

void reduce(OpContext& ctx, const void* in_, void* out_, size_t count, int root) {
  auto* in = static_cast<const uint8_t*>(in_);
  auto* out = static_cast<uint8_t*>(out_);
  const int n = ctx.size(), r = ctx.rank();
  const size_t bytes = count * ctx.elem();
  if (n == 1) {
    if (out != in) kernels::copy(out, in, bytes);
    return finish_avg(ctx, out, count);
  }
  if (bytes <= ctx.tuning.direct_max_bytes) {  // as reduce_algorithm says
    if (r != root) {
      SendSpec s{root, in, bytes};
      return ctx.exchange(&s, 1, nullptr, 0);
    }
    // At the root only: every rank's vector, reduced in rank order.
    uint8_t* gathered = ctx.scratch.get(n * bytes);
    kernels::copy(gathered + r * bytes, in, bytes);  // a copy: out may be in
    std::vector<RecvSpec> recvs;
    for (int p = 0; p < n; ++p)
      if (p != r) recvs.push_back({p, bytes, Sink{gathered + p * bytes}});
    ctx.exchange(nullptr, 0, recvs.data(), recvs.size());
    return reduce_blocks(ctx, gathered, out, count);
  }
  const int pos = (r - root - 1 + 2 * n) % n;  // the chain starts after the root and ends there
  if (pos == 0) {
    SendSpec s{ctx.peer(1), in, bytes};
    return ctx.exchange(&s, 1, nullptr, 0);
  }
  uint8_t* sum = pos == n - 1 ? out : ctx.scratch.get(bytes);
  RecvSpec rv{ctx.peer(-1), bytes, Sink{sum, in}};  // sum = in op (partial sum so far)
  if (pos == n - 1) {
    ctx.exchange(nullptr, 0, &rv, 1);
    return finish_avg(ctx, out, count);
  }
  SendSpec fwd{ctx.peer(1), sum, bytes, &rv.done};
  ctx.exchange(&fwd, 1, &rv, 1);
}

}  // namespace pycomm
