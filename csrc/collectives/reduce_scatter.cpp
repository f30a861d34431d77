// Reduce-scatter: direct for small blocks (each rank receives its block from
// every peer and reduces in rank order), else the ring's first phase with two
// scratch blocks alternating between receive-reduce and send. The uneven
// form (reduce_scatterv) is the same over blocks of the sizes it is given;
// it picks by its largest block.
#include <vector>

#include "collectives.h"
#include "../kernels/reduce.h"

namespace pycomm {

const char* reduce_scatter_algorithm(size_t bytes, int size, const Tuning& tuning) {
  return size == 1 ? "local" : bytes <= tuning.direct_max_bytes ? "direct" : "ring";
}

namespace {

void reduce_blocks_scattered(OpContext& ctx, const uint8_t* in, uint8_t* out, const Chunks& blocks) {
  const int n = ctx.size(), r = ctx.rank();
  const size_t es = ctx.elem(), mine = blocks.length(r);
  if (n == 1) {
    if (out != in) kernels::copy(out, in, mine * es);
    return finish_avg(ctx, out, mine);
  }
  const size_t longest = blocks.longest() * es;
  if (longest <= ctx.tuning.direct_max_bytes)
    return direct_reduce(ctx, [&](int p) { return in + blocks.offset(p) * es; }, out, mine,
                         [&](int p) { return blocks.length(p); });
  uint8_t* tmp = ctx.scratch.get(2 * longest);
  ring_reduce_scatter(ctx, in, blocks, [&](int step, int) {
    return step == n - 2 ? out : tmp + (step % 2) * longest;
  });
  finish_avg(ctx, out, mine);
}

}  // namespace

void reduce_scatter(OpContext& ctx, const void* in, void* out, size_t count) {
  reduce_blocks_scattered(ctx, static_cast<const uint8_t*>(in), static_cast<uint8_t*>(out),
                          Chunks{ctx.size() * count, ctx.size()});
}

void reduce_scatterv(OpContext& ctx, const void* in, void* out, const uint64_t* counts) {
  const std::vector<size_t> starts = prefix_sums(counts, ctx.size());
  reduce_blocks_scattered(ctx, static_cast<const uint8_t*>(in), static_cast<uint8_t*>(out),
                          Chunks{starts.back(), ctx.size(), starts.data()});
}

}  // namespace pycomm
