// Compressed (int8) allreduce and reduce-scatter, two-shot: every rank
// quantizes what it sends, once; each slice's owner receives every other
// rank's int8 bytes for its slice, sums them dequantized in float32 in rank
// order with its own contribution, which never travels and so is taken as it
// is (with its error-feedback residual folded in), and (allreduce) quantizes
// the sum once; those bytes go to every rank, and every rank, the owner
// included, ends with their dequantized values, so all end bitwise
// identical. Re-quantizing partial sums at each ring hop instead would add
// one rounding per rank and the error would grow with the world.
//
// The work runs in rounds: a round handles one piece (int8_piece_bytes worth
// of float32) of every owner's slice, so the int8 bytes and the float32 sum
// stay in cache between quantizing, sending, reducing and dequantizing, and
// only the input and output pass through memory.
//
// A piece travels as one message [float32 scales | int8 values]; pieces of
// zero elements still send their frame, so every rank checks every call.
#include <algorithm>
#include <vector>

#include "collectives.h"
#include "int8_packed.h"
#include "int8_seeds.h"
#include "../kernels/quantize_int8.h"
#include "../kernels/reduce.h"

namespace pycomm {
namespace {

struct Slice {
  size_t begin = 0, length = 0;
};

using Packed = Int8Packed;  // one piece as it travels and is stored in scratch

// Slices of whole blocks: block-aligned chunks of the blocks (allreduce).
std::vector<Slice> block_slices(size_t count, int n, size_t block_size) {
  Chunks blocks{kernels::quant_num_blocks(count, block_size), n};
  std::vector<Slice> s(n);
  for (int j = 0; j < n; ++j) {
    s[j].begin = std::min(count, blocks.offset(j) * block_size);
    s[j].length = std::min(count, (blocks.offset(j) + blocks.length(j)) * block_size) - s[j].begin;
  }
  return s;
}

// Both collectives: quantize, send each piece to its owner, reduce there,
// then either gather the owner's requantized pieces everywhere (allreduce)
// or keep the float32 sum (reduce-scatter, out = this rank's slice).
void run_int8(OpContext& ctx, const uint8_t* in, float* out, const std::vector<Slice>& slices,
              bool gather, const Int8Args& a) {
  const int n = ctx.size(), r = ctx.rank();
  const size_t es = ctx.elem(), bs = a.block_size;
  const size_t piece = std::max<size_t>(bs, ctx.tuning.int8_piece_bytes / sizeof(float) / bs * bs);
  size_t longest = 0;
  for (const Slice& s : slices) longest = std::max(longest, s.length);
  const size_t rounds = std::max<size_t>(1, (longest + piece - 1) / piece);
  const size_t stride = align64(Packed{nullptr, piece, bs}.bytes());
  uint8_t* scratch = ctx.scratch.get(3 * n * stride + piece * sizeof(float));
  uint8_t *mine = scratch, *theirs = scratch + n * stride, *sums = scratch + 2 * n * stride;
  auto* own_buf = reinterpret_cast<float*>(scratch + 3 * n * stride);
  const float divisor = ctx.stamp.op == RedOp::kAvg ? static_cast<float>(n) : 1.0f;
  const uint64_t worker_seed = int8_worker_seed(a.seed, r);

  std::vector<SendSpec> sends;
  std::vector<RecvSpec> recvs;
  std::vector<const int8_t*> qs(n);
  std::vector<const float*> ss(n);
  for (size_t k = 0; k < rounds; ++k) {
    // Piece k of slice j: its first element and length.
    auto first = [&](int j) { return slices[j].begin + std::min(slices[j].length, k * piece); };
    auto length = [&](int j) { return std::min(piece, slices[j].length - (first(j) - slices[j].begin)); };
    auto mine_of = [&](int j) { return Packed{mine + j * stride, length(j), bs}; };
    auto theirs_of = [&](int p) { return Packed{theirs + p * stride, length(r), bs}; };
    auto sum_of = [&](int j) { return Packed{sums + j * stride, length(j), bs}; };

    // 1. Quantize this rank's contribution to every other owner's piece.
    for (int j = 0; j < n; ++j) {
      if (j == r) continue;
      Packed m = mine_of(j);
      const size_t at = first(j);
      kernels::quantize_int8(in + at * es, ctx.stamp.dtype, m.count, bs, a.stochastic, worker_seed,
                             a.worker_residual ? a.worker_residual + at : nullptr, m.q(),
                             m.scales(), at);
    }
    // 2. Each owner receives its piece from every rank.
    sends.clear();
    recvs.clear();
    for (int p = 0; p < n; ++p) {
      if (p == r) continue;
      sends.push_back({p, mine_of(p).base, mine_of(p).bytes()});
      recvs.push_back({p, theirs_of(p).bytes(), Sink{theirs_of(p).base}});
    }
    ctx.exchange(sends.data(), sends.size(), recvs.data(), recvs.size());
    // 3. This rank's own piece in float32: its input as it is (a float32
    //    input with no residual is read in place, unless the output may
    //    overwrite it first), or widened, plus the residual, which it empties.
    const size_t count = length(r), local = first(r) - slices[r].begin;
    const uint8_t* own_in = in + first(r) * es;
    float* residual = a.worker_residual ? a.worker_residual + first(r) : nullptr;
    const float* own = reinterpret_cast<const float*>(own_in);
    if (ctx.stamp.dtype != DType::kFloat32 || residual || !gather) {
      kernels::widen_to_float32(own_in, ctx.stamp.dtype, count, residual, own_buf);
      if (residual) std::fill(residual, residual + count, 0.0f);
      own = own_buf;
    }
    // 4. Sum in rank order (float32), then requantize or keep.
    for (int p = 0; p < n; ++p) {
      Packed src = theirs_of(p);
      qs[p] = src.q();
      ss[p] = src.scales();
    }
    if (!gather) {
      float* dst = out + local;
      kernels::sum_int8_sources(qs.data(), ss.data(), n, count, bs, own, r, dst);
      if (divisor != 1.0f) kernels::divide(dst, count, DType::kFloat32, n);
      continue;
    }
    // The owner's own values come out of the same pass (out may be in: each
    // stretch is read before it is written).
    Packed sum = sum_of(r);
    kernels::reduce_requantize_int8(qs.data(), ss.data(), n, count, bs, divisor, a.stochastic,
                                    int8_owner_seed(a.seed, first(r)),
                                    a.owner_residual ? a.owner_residual + local : nullptr, sum.q(),
                                    sum.scales(), own, r, out + first(r));
    // 5. Every rank gets every other owner's requantized piece and dequantizes it.
    sends.clear();
    recvs.clear();
    for (int p = 0; p < n; ++p) {
      if (p == r) continue;
      sends.push_back({p, sum.base, sum.bytes()});
      recvs.push_back({p, sum_of(p).bytes(), Sink{sum_of(p).base}});
    }
    ctx.exchange(sends.data(), sends.size(), recvs.data(), recvs.size());
    for (int p = 0; p < n; ++p) {
      if (p == r) continue;
      Packed s = sum_of(p);
      kernels::dequantize_int8(s.q(), s.scales(), s.count, bs, out + first(p));
    }
  }
}

}  // namespace

const char* int8_algorithm(size_t, int size, const Tuning&) { return size == 1 ? "local" : "int8 two-shot"; }

size_t allreduce_int8_owned(size_t count, int size, int rank, size_t block_size) {
  return block_slices(count, size, block_size)[rank].length;
}

void allreduce_int8(OpContext& ctx, const void* in, float* out, size_t count, const Int8Args& a) {
  run_int8(ctx, static_cast<const uint8_t*>(in), out, block_slices(count, ctx.size(), a.block_size),
           true, a);
}

void reduce_scatter_int8(OpContext& ctx, const void* in, float* out, size_t count, const Int8Args& a) {
  std::vector<Slice> slices(ctx.size());
  for (int j = 0; j < ctx.size(); ++j) slices[j] = {j * count, count};
  run_int8(ctx, static_cast<const uint8_t*>(in), out, slices, false, a);
}

}  // namespace pycomm
