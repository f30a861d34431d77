// Barrier: dissemination (Hensgen, Finkel & Manber): in round k every rank
// signals rank+2^k and waits for rank-2^k; ceil(log2 n) rounds of empty,
// stamped messages.
#include "collectives.h"

namespace pycomm {

const char* barrier_algorithm(size_t, int size, const Tuning&) { return size == 1 ? "local" : "dissemination"; }

void barrier(OpContext& ctx) {
  for (int k = 1; k < ctx.size(); k <<= 1) ctx.sendrecv(ctx.peer(k), nullptr, 0, ctx.peer(-k), 0, Sink{});
}

}  // namespace pycomm
