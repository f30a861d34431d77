// Gather: every rank sends its block straight to the root, which receives
// from all of them at once; the root takes in each byte once ((n-1) blocks),
// every other rank sends one block. No relay: on one host every pair has its
// own channel, and across hosts a tree would only add hops to the root's link.
// Large blocks go `direct` where the transport splits their copy between
// sender and root (shm with a CPU per rank): the root copies half of each.
#include <vector>

#include "collectives.h"
#include "../kernels/reduce.h"

namespace pycomm {

const char* gather_algorithm(size_t, int size, const Tuning&) { return size == 1 ? "local" : "direct"; }

void gather(OpContext& ctx, const void* in, void* out_, size_t count, int root) {
  const int n = ctx.size(), r = ctx.rank();
  const size_t bytes = count * ctx.elem();
  if (r != root) {
    SendSpec s{root, static_cast<const uint8_t*>(in), bytes};
    s.direct = bytes >= ctx.tr.payload_split_min();
    return ctx.exchange(&s, 1, nullptr, 0);
  }
  auto* out = static_cast<uint8_t*>(out_);
  if (in != out + r * bytes) kernels::copy(out + r * bytes, in, bytes);
  std::vector<RecvSpec> recvs;
  for (int k = 1; k < n; ++k) {  // nearest first: the order peers are likely to arrive in
    const int p = ctx.peer(-k);
    recvs.push_back({p, bytes, Sink{out + p * bytes}});
    recvs.back().direct = recvs.back().split = bytes >= ctx.tr.payload_split_min();
  }
  ctx.exchange(nullptr, 0, recvs.data(), recvs.size());
}

}  // namespace pycomm
