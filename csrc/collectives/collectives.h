// The collective algorithms, written once against the transport interface.
// Buffers are raw bytes of ctx.stamp.dtype; counts are in elements. Every
// algorithm leaves bitwise identical results on every rank: each element of a
// reduction is combined by exactly one rank (ring owner) or in rank order by
// every rank (direct), and the bytes are then copied, never recomputed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>

#include "exchange.h"

namespace pycomm {

// out = reduce over ranks of in (count elements each); in may equal out.
void allreduce(OpContext& ctx, const void* in, void* out, size_t count);
// out (count elements) = block `rank` of the reduction of in (size * count
// elements). In place when out == in + rank * count.
void reduce_scatter(OpContext& ctx, const void* in, void* out, size_t count);
// out (size * count elements) = every rank's in (count elements), in rank
// order. In place when in == out + rank * count.
void allgather(OpContext& ctx, const void* in, void* out, size_t count);
// buf (count elements) = root's buf.
void broadcast(OpContext& ctx, void* buf, size_t count, int root);
void barrier(OpContext& ctx);

// Compressed (int8) collectives (compressed.cpp). The input is float32,
// float16 or bfloat16 (ctx.stamp.dtype), the output float32; every element
// is quantized at most twice, whatever the world size.
struct Int8Args {
  size_t block_size = 64;
  bool stochastic = false;
  uint64_t seed = 0;
  float* worker_residual = nullptr;  // error feedback for this rank's whole input, or null
  float* owner_residual = nullptr;   // allreduce: for the quantized sum of the owned slice, or null
};
// out (count float32) = the reduction of in (count elements) on every rank,
// bitwise identical. out may equal in (float32 input).
void allreduce_int8(OpContext& ctx, const void* in, float* out, size_t count, const Int8Args& a);
// out (count float32) = block `rank` of the reduction of in (size * count
// elements). out may be this rank's own block of in (float32 input).
void reduce_scatter_int8(OpContext& ctx, const void* in, float* out, size_t count, const Int8Args& a);
// How many elements this rank owns in allreduce_int8 (its owner_residual's size).
size_t allreduce_int8_owned(size_t count, int size, int rank, size_t block_size);

// The algorithm the functions above pick for an op (for logs): "direct",
// "ring", "chain", "dissemination", "int8 two-shot". Kept next to the choices.
const char* algorithm_name(Coll coll, size_t bytes, int size, const Tuning& tuning);

// How a ring splits `count` elements over the ranks: balanced, the first
// count % n chunks one element longer.
struct Chunks {
  size_t count;
  int n;
  size_t offset(int c) const { return c * (count / n) + std::min<size_t>(c, count % n); }
  size_t length(int c) const { return count / n + (static_cast<size_t>(c) < count % n ? 1 : 0); }
};

// Ring phases shared by allreduce, reduce_scatter and allgather (ring.cpp).
//
// ring_reduce_scatter: after size-1 steps, chunk `rank` is fully reduced at
// dst(size-2, rank). Step s sends chunk rank-s-1 (from `in` at step 0, else
// from dst(s-1, ...)) and receives chunk rank-s-2, reducing it with this
// rank's own contribution from `in` into dst(s, rank-s-2).
using StepDst = std::function<uint8_t*(int step, int chunk)>;
void ring_reduce_scatter(OpContext& ctx, const uint8_t* in, const Chunks& chunks, const StepDst& dst);
// ring_allgather: buf holds chunk `rank`; afterwards it holds every chunk.
void ring_allgather(OpContext& ctx, uint8_t* buf, const Chunks& chunks);

// The direct (one-step) reduction: every peer p is sent block_for(p) (count
// elements), this rank receives its block from every peer, and reduces them
// all in rank order (with the avg division), so every rank computes the same
// bits. out may alias this rank's own block.
using BlockFor = std::function<const uint8_t*(int peer)>;
void direct_reduce(OpContext& ctx, const BlockFor& block_for, uint8_t* out, size_t count);
// For op avg: the final division by the world size, done once by the owner.
void finish_avg(OpContext& ctx, uint8_t* buf, size_t count);

}  // namespace pycomm
