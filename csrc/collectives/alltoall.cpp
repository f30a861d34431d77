// All-to-all: each rank sends every peer only the block addressed to it
// ((n-1)/n of its input in all) and receives one block from each. All n-1
// sends and receives are posted in one exchange, in pairwise order (peer
// r+k for sends, r-k for receives), so every pair's transfer overlaps every
// other's and no rank waits on a step it has no data for. The uneven form
// takes send counts and receive counts per peer. The blocks are `direct`:
// where the transport can (shm), the receiver copies each straight out of
// the sender's memory, one copy instead of two and no turn of the sender's
// needed (16 MiB at 4 ranks on 2 cores: 3.3-3.5 ms against 12.3-12.5
// through the rings, bench/RESULTS.md).
#include <vector>

#include "collectives.h"
#include "../kernels/reduce.h"

namespace pycomm {

const char* alltoall_algorithm(size_t, int size, const Tuning&) { return size == 1 ? "local" : "pairwise"; }

namespace {

constexpr size_t kStreamMinBytes = 4 << 20;  // measured at 4 and 8 MiB blocks (16 MiB at 4 and 2 ranks)

void exchange_blocks(OpContext& ctx, const uint8_t* in, uint8_t* out, const Chunks& send, const Chunks& recv) {
  const int n = ctx.size(), r = ctx.rank();
  const size_t es = ctx.elem();
  // Our own block: read by the caller later if at all, so a large one is
  // streamed past the cache instead of evicting what the copies below need.
  const size_t own = send.length(r) * es;
  (own >= kStreamMinBytes ? kernels::copy_stream : kernels::copy)(out + recv.offset(r) * es, in + send.offset(r) * es,
                                                                  own);
  std::vector<SendSpec> sends;
  std::vector<RecvSpec> recvs;
  for (int k = 1; k < n; ++k) {
    const int to = ctx.peer(k), from = ctx.peer(-k);
    sends.push_back({to, in + send.offset(to) * es, send.length(to) * es});
    sends.back().direct = true;
    recvs.push_back({from, recv.length(from) * es, Sink{out + recv.offset(from) * es}});
    recvs.back().direct = true;
  }
  ctx.exchange(sends.data(), sends.size(), recvs.data(), recvs.size());
}

}  // namespace

void alltoall(OpContext& ctx, const void* in, void* out, size_t count) {
  const Chunks blocks{ctx.size() * count, ctx.size()};
  exchange_blocks(ctx, static_cast<const uint8_t*>(in), static_cast<uint8_t*>(out), blocks, blocks);
}

void alltoallv(OpContext& ctx, const void* in, void* out, const uint64_t* send_counts,
               const uint64_t* recv_counts) {
  const int n = ctx.size();
  const std::vector<size_t> s = prefix_sums(send_counts, n), v = prefix_sums(recv_counts, n);
  exchange_blocks(ctx, static_cast<const uint8_t*>(in), static_cast<uint8_t*>(out), Chunks{s[n], n, s.data()},
                  Chunks{v[n], n, v.data()});
}

}  // namespace pycomm
