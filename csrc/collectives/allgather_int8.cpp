// Compressed (int8) allgather, for weights (ZeRO++'s qwZ): every rank
// quantizes its own part once, the int8 values and block scales go to every
// peer, and every rank dequantizes every part, its own included, from the
// same bytes. So every rank holds bitwise the same result (FSDP needs every
// rank's full weights identical) and every element is rounded exactly once
// (twice for a float16/bfloat16 output: to int8, then the cast).
//
// In rounds of one piece (int8_piece_bytes of float32) of every part, as
// compressed.cpp: quantized, sent, received and dequantized while in cache.
// Direct: each rank sends its piece to every peer at once; pieces of zero
// elements still send their frame, so every rank checks every call.
#include <algorithm>
#include <vector>

#include "collectives.h"
#include "int8_packed.h"
#include "int8_seeds.h"
#include "../kernels/quantize_int8.h"

namespace pycomm {

const char* allgather_int8_algorithm(size_t, int size, const Tuning&) {
  return size == 1 ? "local" : "int8 direct";
}

void allgather_int8(OpContext& ctx, const void* in, void* out, size_t count, const Int8Args& a) {
  const int n = ctx.size(), r = ctx.rank();
  const size_t es = ctx.elem(), bs = a.block_size, out_es = dtype_size(a.out_dtype);
  const size_t piece = std::max<size_t>(bs, ctx.tuning.int8_piece_bytes / sizeof(float) / bs * bs);
  const size_t rounds = std::max<size_t>(1, (count + piece - 1) / piece);
  const size_t stride = align64(Int8Packed{nullptr, piece, bs}.bytes());
  uint8_t* scratch = ctx.scratch.get(n * stride);
  const uint64_t seed = int8_worker_seed(a.seed, r);
  auto* dst = static_cast<uint8_t*>(out);

  std::vector<SendSpec> sends;
  std::vector<RecvSpec> recvs;
  for (size_t k = 0; k < rounds; ++k) {
    const size_t at = std::min(count, k * piece), length = std::min(piece, count - at);
    auto part = [&](int p) { return Int8Packed{scratch + p * stride, length, bs}; };
    const Int8Packed mine = part(r);
    // The stochastic counter is the element's index in the whole result.
    kernels::quantize_int8(static_cast<const uint8_t*>(in) + at * es, ctx.stamp.dtype, length, bs,
                           a.stochastic, seed, nullptr, mine.q(), mine.scales(), r * count + at);
    sends.clear();
    recvs.clear();
    for (int p = 0; p < n; ++p) {
      if (p == r) continue;
      sends.push_back({p, mine.base, mine.bytes()});
      recvs.push_back({p, part(p).bytes(), Sink{part(p).base}});
    }
    ctx.exchange(sends.data(), sends.size(), recvs.data(), recvs.size());
    for (int p = 0; p < n; ++p) {
      const Int8Packed got = part(p);
      kernels::dequantize_int8_as(got.q(), got.scales(), length, bs, a.out_dtype,
                                  dst + (p * count + at) * out_es);
    }
  }
}

}  // namespace pycomm
