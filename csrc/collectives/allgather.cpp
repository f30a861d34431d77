// Allgather: direct for small blocks (every rank sends its block to every
// peer at once), else the ring's second phase. The uneven form (allgatherv)
// is the same over blocks of the sizes it is given; it picks by its largest
// block.
#include <vector>

#include "collectives.h"
#include "../kernels/reduce.h"

namespace pycomm {

const char* allgather_algorithm(size_t bytes, int size, const Tuning& tuning) {
  return size == 1 ? "local" : bytes <= tuning.direct_max_bytes ? "direct" : "ring";
}

namespace {

void gather_blocks(OpContext& ctx, const void* in, uint8_t* out, const Chunks& blocks) {
  const int n = ctx.size(), r = ctx.rank();
  const size_t es = ctx.elem();
  uint8_t* own = out + blocks.offset(r) * es;
  if (in != own) kernels::copy(own, in, blocks.length(r) * es);
  if (n == 1) return;
  if (blocks.longest() * es > ctx.tuning.direct_max_bytes) return ring_allgather(ctx, out, blocks);
  std::vector<SendSpec> sends;
  std::vector<RecvSpec> recvs;
  for (int p = 0; p < n; ++p) {
    if (p == r) continue;
    sends.push_back({p, own, blocks.length(r) * es});
    recvs.push_back({p, blocks.length(p) * es, Sink{out + blocks.offset(p) * es}});
  }
  ctx.exchange(sends.data(), sends.size(), recvs.data(), recvs.size());
}

}  // namespace

void allgather(OpContext& ctx, const void* in, void* out, size_t count) {
  gather_blocks(ctx, in, static_cast<uint8_t*>(out), Chunks{ctx.size() * count, ctx.size()});
}

void allgatherv(OpContext& ctx, const void* in, void* out, const uint64_t* counts) {
  const std::vector<size_t> starts = prefix_sums(counts, ctx.size());
  gather_blocks(ctx, in, static_cast<uint8_t*>(out), Chunks{starts.back(), ctx.size(), starts.data()});
}

}  // namespace pycomm
