// The collective algorithms, written once against the transport interface.
// Buffers are raw bytes of ctx.stamp.dtype; counts are in elements. Every
// algorithm leaves bitwise identical results on every rank: each element of a
// reduction is combined by exactly one rank (ring owner) or in rank order by
// every rank (direct), and the bytes are then copied, never recomputed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

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
// The uneven forms (counts: elements per rank, the same list on every rank).
// out (counts[rank] elements) = block `rank` of the reduction of in (sum of
// counts); in place when out == in + offset of block rank.
void reduce_scatterv(OpContext& ctx, const void* in, void* out, const uint64_t* counts);
// out (sum of counts) = every rank's in (counts[rank] elements), in rank
// order. In place when in == out + offset of block rank.
void allgatherv(OpContext& ctx, const void* in, void* out, const uint64_t* counts);
// out (size * count) = block `rank` of every rank's in (size * count): rank p
// gets block p of every rank's input, in rank order. in and out must not overlap.
void alltoall(OpContext& ctx, const void* in, void* out, size_t count);
// The same with send_counts[p] elements to peer p (in: their sum, in peer
// order) and recv_counts[p] from peer p (out: their sum, in peer order).
void alltoallv(OpContext& ctx, const void* in, void* out, const uint64_t* send_counts,
               const uint64_t* recv_counts);
// Rooted: out (size * count, at the root) = every rank's in (count), in rank
// order; in place at the root when in == out + root * count.
void gather(OpContext& ctx, const void* in, void* out, size_t count, int root);
// out (count) = block `rank` of the root's in (size * count, read at the root only).
void scatter(OpContext& ctx, const void* in, void* out, size_t count, int root);
// out (count, at the root) = the reduction of every rank's in (count); out
// may be in.
void reduce(OpContext& ctx, const void* in, void* out, size_t count, int root);

// out (count elements) = root's in; in place when in is null or out (the
// root's in is read, other ranks' ignored).
void broadcast(OpContext& ctx, const void* in, void* out, size_t count, int root);
void barrier(OpContext& ctx);

// Compressed (int8) collectives (compressed.cpp). The input is float32,
// float16 or bfloat16 (ctx.stamp.dtype), the output float32; every element
// is quantized at most twice, whatever the world size.
// out (count float32) = the reduction of in (count elements) on every rank,
// bitwise identical. out may equal in (float32 input).
void allreduce_int8(OpContext& ctx, const void* in, float* out, size_t count, const Int8Args& a);
// out (count float32) = block `rank` of the reduction of in (size * count
// elements). out may be this rank's own block of in (float32 input).
void reduce_scatter_int8(OpContext& ctx, const void* in, float* out, size_t count, const Int8Args& a);
// How many elements this rank owns in allreduce_int8 (its owner_residual's size).
size_t allreduce_int8_owned(size_t count, int size, int rank, size_t block_size);
// out (size * count elements of a.out_dtype: float32, or the input's float16
// or bfloat16) = every rank's in, each part quantized once by its rank and
// dequantized by all from the same bytes: bitwise identical on every rank
// (allgather_int8.cpp). No error feedback.
void allgather_int8(OpContext& ctx, const void* in, void* out, size_t count, const Int8Args& a);

// The algorithm each of the functions above picks for one rank's block of
// `bytes` on `size` ranks (operation.h: OpInfo::algorithm), for logs; each
// is defined next to the choice it reports.
const char* allreduce_algorithm(size_t bytes, int size, const Tuning& tuning);
const char* reduce_scatter_algorithm(size_t bytes, int size, const Tuning& tuning);
const char* allgather_algorithm(size_t bytes, int size, const Tuning& tuning);
const char* broadcast_algorithm(size_t bytes, int size, const Tuning& tuning);
const char* barrier_algorithm(size_t bytes, int size, const Tuning& tuning);
const char* int8_algorithm(size_t bytes, int size, const Tuning& tuning);
const char* allgather_int8_algorithm(size_t bytes, int size, const Tuning& tuning);
const char* alltoall_algorithm(size_t bytes, int size, const Tuning& tuning);
const char* gather_algorithm(size_t bytes, int size, const Tuning& tuning);
const char* scatter_algorithm(size_t bytes, int size, const Tuning& tuning);
const char* reduce_algorithm(size_t bytes, int size, const Tuning& tuning);

// How `count` elements split into n chunks: balanced, the first count % n
// chunks one element longer; or, with `starts` (n + 1 prefix sums), as the
// uneven forms' counts say.
struct Chunks {
  size_t count;
  int n;
  const size_t* starts = nullptr;
  size_t offset(int c) const {
    return starts ? starts[c] : c * (count / n) + std::min<size_t>(c, count % n);
  }
  size_t length(int c) const {
    return starts ? starts[c + 1] - starts[c] : count / n + (static_cast<size_t>(c) < count % n ? 1 : 0);
  }
  size_t longest() const {
    size_t m = 0;
    for (int c = 0; c < n; ++c) m = std::max(m, length(c));
    return m;
  }
};
// The prefix sums of n counts (n + 1 entries), for Chunks::starts.
std::vector<size_t> prefix_sums(const uint64_t* counts, int n);

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

// The direct (one-step) reduction: every peer p is sent block_for(p)
// (count_for(p) elements; null: count), this rank receives its block
// (count elements) from every peer, and reduces them all in rank order (with
// the avg division), so every rank computes the same bits. out may alias
// this rank's own block.
using BlockFor = std::function<const uint8_t*(int peer)>;
using CountFor = std::function<size_t(int peer)>;
void direct_reduce(OpContext& ctx, const BlockFor& block_for, uint8_t* out, size_t count,
                   const CountFor& count_for = nullptr);
// out = the reduction of every rank's block of `gathered` (size blocks of
// count elements, in rank order), in rank order, then the avg division.
void reduce_blocks(OpContext& ctx, const uint8_t* gathered, uint8_t* out, size_t count);
// For op avg: the final division by the world size, done once by the owner.
void finish_avg(OpContext& ctx, uint8_t* buf, size_t count);

}  // namespace pycomm
