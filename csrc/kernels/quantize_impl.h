// Int8 quantization kernels (quantize_int8.h), written once as plain loops
// that GCC vectorises, and compiled once per instruction set.
//
// Same two-inclusion pattern as reduce_impl.h: each per-ISA file
// (quantize_baseline.cpp, quantize_avx2.cpp, quantize_avx512.cpp) includes
// this header once before its `#pragma GCC target` (headers and the table
// type, default target only) and once after it with PYCOMM_ISA (namespace
// name) and PYCOMM_ISA_LEVEL defined (the bodies, in a namespace of their own).
//
// Why the paths are bit-identical:
// - every float op is elementwise and spelled out (no reassociation), and
//   the bodies are compiled with fp-contract=off: GCC's C++ default (fast)
//   would fuse v - q * scale and acc + q * scale into FMAs on the AVX2 and
//   AVX-512 paths only;
// - the block maximum is exact whatever the lane order (max of absolute
//   values; NaN is sticky and only decides "non-finite block");
// - rounding uses the 1.5 * 2^23 trick, exact round-to-nearest-even for
//   |t| <= 127 in the default rounding mode, so SSE2 needs no roundps;
// - float16 is widened in software (exact), NaN payloads never reach the
//   output (non-finite blocks get a fixed NaN scale and q = 0);
// - the stochastic-rounding hash is 64-bit integer math.

#ifndef PYCOMM_KERNELS_QUANTIZE_IMPL_DECLS
#define PYCOMM_KERNELS_QUANTIZE_IMPL_DECLS

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>

#include "quantize_int8.h"

namespace pycomm {
namespace kernels {

// One block-loop per (input type, error feedback, stochastic rounding).
// index_base: the stochastic-rounding counter of element 0, so that a call on
// part of a tensor draws what a call on all of it would.
using QuantFn = void (*)(const void* x, size_t count, size_t block_size, uint64_t seed,
                         uint64_t index_base, float* residual, int8_t* q, float* scales);
using DequantFn = void (*)(const int8_t* q, const float* scales, size_t count,
                           size_t block_size, float* out);
using WidenFn = void (*)(const void* x, size_t count, const float* residual, float* out);
using DequantAsFn = void (*)(const int8_t* q, const float* scales, size_t count, size_t block_size,
                             void* out);

// The sources of a compressed reduction's sum (sum_int8_sources).
struct Int8Sources {
  const int8_t* const* q;
  const float* const* scales;
  size_t n;
  const float* dense;  // stands for source dense_index when not null
  size_t dense_index;
};
using SumFn = void (*)(const Int8Sources& src, size_t count, size_t block_size, float* acc);
// reduce_requantize_int8: the sum, divided, quantized (and dequantized into
// dequant_out) in one pass over each group of blocks.
using ReduceRequantFn = void (*)(const Int8Sources& src, size_t count, size_t block_size,
                                 float divisor, uint64_t seed, float* residual, int8_t* q,
                                 float* scales, float* dequant_out);

struct QuantTable {
  QuantFn quant[3][2][2];  // [float32, float16, bfloat16][feedback][stochastic]
  DequantFn dequant[2];    // [accumulate]
  WidenFn widen[3][2];     // [float32, float16, bfloat16][residual added]
  DequantAsFn dequant_as[3];  // [float32, float16, bfloat16] out
  SumFn sum;
  ReduceRequantFn reduce_requant[2][2][2];  // [feedback][stochastic][dequant_out]
};

const QuantTable* quant_baseline_table();
const QuantTable* quant_avx2_table();
const QuantTable* quant_avx512_table();

}  // namespace kernels
}  // namespace pycomm

#endif  // PYCOMM_KERNELS_QUANTIZE_IMPL_DECLS

#ifdef PYCOMM_ISA

#pragma GCC optimize("fp-contract=off")

namespace pycomm {
namespace kernels {
namespace PYCOMM_ISA {
namespace quant {

inline void prefetch_lines(const void* p, size_t bytes) {
  for (size_t k = 0; k < bytes; k += 64) __builtin_prefetch(static_cast<const char*>(p) + k);
}

inline uint32_t f32_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
inline float bits_f32(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
inline uint32_t blend_bits(bool c, uint32_t x, uint32_t y) {
  const uint32_t m = 0u - static_cast<uint32_t>(c);
  return (x & m) | (y & ~m);
}

// ---- Inputs, widened exactly to float32 ------------------------------------

struct InF32 {
  using T = float;
  static float widen(float f) { return f; }
};
struct InF16 {  // branch-free (vectorises), as F16::widen in reduce_impl.h
  using T = uint16_t;
  static float widen(uint16_t h) {
    const uint32_t w = uint32_t(h) << 16, sign = w & 0x80000000u, two_w = w + w;
    const float normal = bits_f32((two_w >> 4) + (0xE0u << 23)) * 0x1p-112f;
    const float subnormal = bits_f32((two_w >> 17) | (126u << 23)) - 0.5f;
    return bits_f32(sign | blend_bits(two_w < (1u << 27), f32_bits(subnormal), f32_bits(normal)));
  }
};
struct InBF16 {
  using T = uint16_t;
  static float widen(uint16_t h) { return bits_f32(uint32_t(h) << 16); }
};

// ---- Outputs, narrowed from float32: round to nearest even, as numpy / torch --

struct OutF32 {
  using T = float;
  static float narrow(float f) { return f; }
};
struct OutF16 {  // branch-free (vectorises); NaN -> 0x7E00, overflow -> +-Inf
  using T = uint16_t;
  static uint16_t narrow(float f) {
    const uint32_t u = f32_bits(f), sign = (u >> 16) & 0x8000u, a = u & 0x7FFFFFFFu;
    // Normal: rebias the exponent, round 23 mantissa bits to 10 (a carry
    // into the exponent is right, up to Inf from 65520 on).
    const uint32_t normal = (a - ((127u - 15u) << 23) + 0xFFFu + ((a >> 13) & 1u)) >> 13;
    // Below 2^-14: adding 0.5 (whose ulp is 2^-24, float16's subnormal step)
    // rounds to nearest even in the FPU.
    const uint32_t subnormal = f32_bits(bits_f32(a) + 0.5f) - f32_bits(0.5f);
    uint32_t h = blend_bits(a < (113u << 23), subnormal, normal);
    h = blend_bits(a >= (143u << 23), 0x7C00u, h);  // |f| >= 2^16, Inf
    h = blend_bits(a > 0x7F800000u, 0x7E00u, h);    // NaN
    return static_cast<uint16_t>(h | sign);
  }
};
struct OutBF16 {  // NaN -> 0x7FC0, as torch
  using T = uint16_t;
  static uint16_t narrow(float f) {
    const uint32_t u = f32_bits(f);
    const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    return static_cast<uint16_t>(blend_bits((u & 0x7FFFFFFFu) > 0x7F800000u, 0x7FC0u, rounded));
  }
};

// ---- Block maximum of |v|: NaN if any NaN, else +Inf if any Inf ----------

// One native register of lanes: wider GCC vectors would be split, and their
// selects lowered lane by lane, on SSE2 and AVX2.
constexpr size_t kLanes = PYCOMM_ISA_LEVEL == 2 ? 16 : PYCOMM_ISA_LEVEL == 1 ? 8 : 4;
typedef float VF __attribute__((vector_size(kLanes * 4)));
typedef uint32_t VU __attribute__((vector_size(kLanes * 4)));

inline float absmax_step(float m, float a) { return (a > m || a != a) ? a : m; }

// Folds lane k + W onto lane k, down to lane 0, with the same sticky-NaN
// maximum: in registers, branch-free (a scalar fold costs as much as the
// whole quantize loop for 64-element blocks).
template <size_t W> inline VF fold_absmax(VF m) {
  VU idx;
  for (size_t k = 0; k < kLanes; ++k) idx[k] = static_cast<uint32_t>((k + W) % kLanes);
  const VF o = __builtin_shuffle(m, idx);
  const VU take = (VU)((o > m) | (o != o));
  m = (VF)((take & (VU)o) | (~take & (VU)m));
  if constexpr (W > 1) {
    return fold_absmax<W / 2>(m);
  } else {
    return m;
  }
}

// Sticky-NaN maximum, lane by lane, as bit masks (?: is lowered lane by lane).
inline VF max_nan(VF m, VF a) {
  const VU take = (VU)((a > m) | (a != a));
  return (VF)((take & (VU)a) | (~take & (VU)m));
}

// Halves rows of 2W lanes: lanes [s*2W, s*2W + 2W) of a and b (S = kLanes /
// 2W rows each) fold onto W lanes, a's rows first, then b's.
template <size_t W> inline VF fold_pair(VF a, VF b) {
  constexpr size_t S = kLanes / (2 * W);
  VU lo, hi;
  for (size_t t = 0; t < kLanes; ++t) {
    const size_t row = t / W % S, k = t % W, from_b = t >= S * W ? kLanes : 0;
    lo[t] = static_cast<uint32_t>(from_b + row * 2 * W + k);
    hi[t] = lo[t] + W;
  }
  return max_nan(__builtin_shuffle(a, b, lo), __builtin_shuffle(a, b, hi));
}

// rows[0 .. n) (n a power of two, rows of 2W lanes) folded to n / 2.
template <size_t W> inline void fold_rows(VF* rows, size_t n) {
  for (size_t i = 0; i < n / 2; ++i) rows[i] = fold_pair<W>(rows[2 * i], rows[2 * i + 1]);
  if constexpr (W > 1) fold_rows<W / 2>(rows, n / 2);
}

// max|v| of each of kLanes whole blocks at v, block k in lane k. The
// blocks' lane folds share their shuffles: kLanes - 1 pair folds in all
// instead of log2(kLanes) single folds per block.
inline VF blocks_absmax(const float* v, size_t block_size) {
  VF rows[kLanes];
  for (size_t k = 0; k < kLanes; ++k) {
    VF m = {};
    for (size_t j = 0; j < block_size; j += kLanes) {
      VF a;
      std::memcpy(&a, v + k * block_size + j, sizeof a);
      m = max_nan(m, (VF)((VU)a & 0x7FFFFFFFu));
    }
    rows[k] = m;
  }
  fold_rows<kLanes / 2>(rows, kLanes);
  return rows[0];
}

inline float block_absmax(const float* v, size_t n) {
  VF m = {};
  size_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    VF a;
    std::memcpy(&a, v + j, sizeof a);
    a = (VF)((VU)a & 0x7FFFFFFFu);
    const VU take = (VU)((a > m) | (a != a));  // as bit masks: ?: is lowered lane by lane
    m = (VF)((take & (VU)a) | (~take & (VU)m));
  }
  float r = fold_absmax<kLanes / 2>(m)[0];
  for (; j < n; ++j) r = absmax_step(r, __builtin_fabsf(v[j]));
  return r;
}

// ---- Stochastic rounding: u in [0, 1) from (seed, global index) ----------
// splitmix64's finaliser over seed ^ (index * golden) + golden; the top 24
// bits, scaled by 2^-24 (exact in float32).

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;

inline float uniform24(uint64_t seed, uint64_t index) {
  uint64_t z = (seed ^ (index * kGolden)) + kGolden;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<float>(static_cast<int32_t>(z >> 40)) * 0x1p-24f;
}

// Round to nearest even for |t| <= 2^22 in the default rounding mode.
constexpr float kRound = 12582912.0f;  // 1.5 * 2^23
inline float rne(float t) { return (t + kRound) - kRound; }
// Selects as bit masks: GCC's if-conversion gives up on float ?: forms
// (-ftrapping-math), and the loops would not vectorise without AVX-512.
inline float select(bool c, float x, float y) {
  return bits_f32(blend_bits(c, f32_bits(x), f32_bits(y)));
}
inline float clamp127(float t) {
  t = select(t < -127.0f, -127.0f, t);
  return select(t > 127.0f, 127.0f, t);
}

// ---- Quantize ---------------------------------------------------------------

// Values: v[0, gn) = the source's elements [g0, g0 + gn) as float32, plus
// residual when kFeedback; prefetch(at, n): the source's elements [at, at + n).

template <class In>
struct Widened {  // quantize's input, widened
  const typename In::T* x;
  template <bool kFeedback>
  void load(size_t g0, size_t gn, const float* rg, float* v) const {
    const typename In::T* xg = x + g0;
    if (kFeedback) {
      for (size_t j = 0; j < gn; ++j) v[j] = In::widen(xg[j]) + rg[j];
    } else {
      for (size_t j = 0; j < gn; ++j) v[j] = In::widen(xg[j]);
    }
  }
  void prefetch(size_t at, size_t n) const { prefetch_lines(x + at, n * sizeof(typename In::T)); }
};

template <bool kAccumulate>
void dequantize_blocks(const int8_t* q, const float* scales, size_t count, size_t block_size,
                       float* out);

struct Summed {  // a compressed reduction's sum, in source order, divided
  const Int8Sources& src;
  size_t block_size;
  float divisor;
  template <bool kFeedback>
  void load(size_t g0, size_t gn, const float* rg, float* v) const {
    for (size_t s = 0; s < src.n; ++s) {
      if (src.dense && s == src.dense_index) {
        const float* d = src.dense + g0;
        if (s == 0) {
          std::memcpy(v, d, gn * sizeof(float));
        } else {
          for (size_t j = 0; j < gn; ++j) v[j] = v[j] + d[j];
        }
      } else if (s == 0) {
        dequantize_blocks<false>(src.q[s] + g0, src.scales[s] + g0 / block_size, gn, block_size, v);
      } else {
        dequantize_blocks<true>(src.q[s] + g0, src.scales[s] + g0 / block_size, gn, block_size, v);
      }
    }
    if (divisor != 1.0f) {
      for (size_t j = 0; j < gn; ++j) v[j] = v[j] / divisor;
    }
    if (kFeedback) {
      for (size_t j = 0; j < gn; ++j) v[j] = v[j] + rg[j];
    }
  }
  void prefetch(size_t at, size_t n) const {
    for (size_t s = 0; s < src.n; ++s) {
      if (src.dense && s == src.dense_index) {
        prefetch_lines(src.dense + at, n * sizeof(float));
      } else {
        prefetch_lines(src.q[s] + at, n);
      }
    }
  }
};

// A group of whole blocks (kGroup elements, or one block when blocks are
// larger) at a time, phase by phase: the values, then every block's maximum
// and scale, then the rounding. Each block's maximum is a chain of dependent
// steps (compares, the lane fold, the scale's division); phase by phase the
// chains of a group are independent and overlap, where block by block each
// waited for the one before (AVX-512, 64-element blocks, in cache: 7.9 ->
// 9.3 GB/s). 1024 elements measured best of 512..4096: larger groups leave
// memory idle longer between the group's loads.
// kDequant: also dq = the values q dequantizes to (r * scale, exactly what
// dequantize_int8 gives), while they are in registers.
constexpr size_t kGroup = 1024;

template <bool kFeedback, bool kStochastic, bool kDequant, class Src>
void quantize_groups(const Src& src, size_t count, size_t block_size, uint64_t seed,
                     uint64_t index_base, float* residual, int8_t* q, float* scales, float* dq) {
  alignas(64) float v[kQuantMaxBlock];
  float scale_of[kGroup / kQuantMinBlock];
  const size_t group = block_size > kGroup ? block_size : kGroup;
  for (size_t g0 = 0; g0 < count; g0 += group) {
    const size_t gn = count - g0 < group ? count - g0 : group;
    const size_t nblocks = (gn + block_size - 1) / block_size;
    float* rg = kFeedback ? residual + g0 : nullptr;
    src.template load<kFeedback>(g0, gn, rg, v);
    size_t b = 0;
    for (; (b + kLanes) * block_size <= gn; b += kLanes) {  // kLanes whole blocks at once
      const VF m = blocks_absmax(v + b * block_size, block_size) / 127.0f;
      std::memcpy(scale_of + b, &m, sizeof m);
    }
    for (; b < nblocks; ++b) {
      const size_t o = b * block_size;
      scale_of[b] = block_absmax(v + o, gn - o < block_size ? gn - o : block_size) / 127.0f;
    }
    // (NaN or Inf maxima stay NaN or Inf: the rounding below checks them.)
    for (size_t b = 0, blk = g0 / block_size; b < nblocks; ++b, ++blk) {
      const size_t o = b * block_size, b0 = g0 + o;
      const size_t n = gn - o < block_size ? gn - o : block_size;
      const float* vb = v + o;
      float* rb = kFeedback ? rg + o : nullptr;
      int8_t* qb = q + b0;
      float* db = kDequant ? dq + b0 : nullptr;
      const float scale = scale_of[b];
      // The next group's input, a block's worth at a time, so memory
      // streams while this group is rounded (the phases above load it in
      // one burst, and the hardware prefetcher waits for demand loads).
      if (const size_t next = g0 + group + o; next < count) {
        const size_t ahead = count - next < n ? count - next : n;
        src.prefetch(next, ahead);
        if (kFeedback) prefetch_lines(residual + next, ahead * sizeof(float));
      }
      if (!(scale <= std::numeric_limits<float>::max())) {  // NaN or Inf in the block
        scales[blk] = std::numeric_limits<float>::quiet_NaN();
        std::memset(qb, 0, n);
        if (kFeedback) std::memset(rb, 0, n * sizeof(float));  // NaN must not stick
        if (kDequant) {
          for (size_t j = 0; j < n; ++j) db[j] = std::numeric_limits<float>::quiet_NaN();
        }
        continue;
      }
      scales[blk] = scale;
      if (scale == 0.0f) {  // all zeros, or a maximum that underflows
        std::memset(qb, 0, n);
        if (kFeedback) std::memcpy(rb, vb, n * sizeof(float));  // v - 0 * 0 == v
        if (kDequant) std::memset(db, 0, n * sizeof(float));   // 0 * 0 == +0
        continue;
      }
      // Clamping before rounding equals clamping after: the bounds are integers.
      for (size_t j = 0; j < n; ++j) {
        float r;
        if (kStochastic) {
          const float s = clamp127(vb[j] / scale + uniform24(seed, index_base + b0 + j));
          r = rne(s);
          r = r - select(r > s, 1.0f, 0.0f);  // floor (r is never -0)
        } else {
          r = rne(clamp127(vb[j] / scale));
        }
        qb[j] = static_cast<int8_t>(static_cast<int32_t>(r));
        if (kFeedback) rb[j] = vb[j] - r * scale;
        if (kDequant) db[j] = r * scale;
      }
    }
  }
}

template <class In, bool kFeedback, bool kStochastic>
void quantize_blocks(const void* x, size_t count, size_t block_size, uint64_t seed,
                     uint64_t index_base, float* residual, int8_t* q, float* scales) {
  quantize_groups<kFeedback, kStochastic, false>(Widened<In>{static_cast<const typename In::T*>(x)},
                                                 count, block_size, seed, index_base, residual, q,
                                                 scales, nullptr);
}

template <bool kFeedback, bool kStochastic, bool kDequant>
void reduce_requantize_blocks(const Int8Sources& src, size_t count, size_t block_size,
                              float divisor, uint64_t seed, float* residual, int8_t* q,
                              float* scales, float* dequant_out) {
  quantize_groups<kFeedback, kStochastic, kDequant>(Summed{src, block_size, divisor}, count,
                                                    block_size, seed, 0, residual, q, scales,
                                                    dequant_out);
}

void sum_sources(const Int8Sources& src, size_t count, size_t block_size, float* acc) {
  Summed{src, block_size, 1.0f}.load<false>(0, count, nullptr, acc);
}

// ---- Dequantize ---------------------------------------------------------------

template <bool kAccumulate>
void dequantize_blocks(const int8_t* q, const float* scales, size_t count, size_t block_size,
                       float* out) {
  for (size_t b0 = 0, blk = 0; b0 < count; b0 += block_size, ++blk) {
    const size_t n = count - b0 < block_size ? count - b0 : block_size;
    const float s = scales[blk];
    const int8_t* qb = q + b0;
    float* ob = out + b0;
    if (kAccumulate) {
      for (size_t j = 0; j < n; ++j) ob[j] = ob[j] + static_cast<float>(qb[j]) * s;
    } else {
      for (size_t j = 0; j < n; ++j) ob[j] = static_cast<float>(qb[j]) * s;
    }
  }
}

// out[i] = narrow(q[i] * scale): a compressed all-gather's output in its dtype.
template <class Out>
void dequantize_blocks_as(const int8_t* q, const float* scales, size_t count, size_t block_size,
                          void* outv) {
  auto* out = static_cast<typename Out::T*>(outv);
  for (size_t b0 = 0, blk = 0; b0 < count; b0 += block_size, ++blk) {
    const size_t n = count - b0 < block_size ? count - b0 : block_size;
    const float s = scales[blk];
    const int8_t* qb = q + b0;
    typename Out::T* ob = out + b0;
    for (size_t j = 0; j < n; ++j) ob[j] = Out::narrow(static_cast<float>(qb[j]) * s);
  }
}

// ---- Widen (a rank's own, unquantized contribution) ---------------------------

template <class In, bool kResidual>
void widen_blocks(const void* xv, size_t count, const float* residual, float* out) {
  const auto* x = static_cast<const typename In::T*>(xv);
  if (kResidual) {
    for (size_t j = 0; j < count; ++j) out[j] = In::widen(x[j]) + residual[j];
  } else {
    for (size_t j = 0; j < count; ++j) out[j] = In::widen(x[j]);
  }
}

}  // namespace quant

constexpr QuantTable kQuantTable = {
    {{{quant::quantize_blocks<quant::InF32, false, false>,
       quant::quantize_blocks<quant::InF32, false, true>},
      {quant::quantize_blocks<quant::InF32, true, false>,
       quant::quantize_blocks<quant::InF32, true, true>}},
     {{quant::quantize_blocks<quant::InF16, false, false>,
       quant::quantize_blocks<quant::InF16, false, true>},
      {quant::quantize_blocks<quant::InF16, true, false>,
       quant::quantize_blocks<quant::InF16, true, true>}},
     {{quant::quantize_blocks<quant::InBF16, false, false>,
       quant::quantize_blocks<quant::InBF16, false, true>},
      {quant::quantize_blocks<quant::InBF16, true, false>,
       quant::quantize_blocks<quant::InBF16, true, true>}}},
    {quant::dequantize_blocks<false>, quant::dequantize_blocks<true>},
    {{quant::widen_blocks<quant::InF32, false>, quant::widen_blocks<quant::InF32, true>},
     {quant::widen_blocks<quant::InF16, false>, quant::widen_blocks<quant::InF16, true>},
     {quant::widen_blocks<quant::InBF16, false>, quant::widen_blocks<quant::InBF16, true>}},
    {quant::dequantize_blocks_as<quant::OutF32>, quant::dequantize_blocks_as<quant::OutF16>,
     quant::dequantize_blocks_as<quant::OutBF16>},
    quant::sum_sources,
    {{{quant::reduce_requantize_blocks<false, false, false>,
       quant::reduce_requantize_blocks<false, false, true>},
      {quant::reduce_requantize_blocks<false, true, false>,
       quant::reduce_requantize_blocks<false, true, true>}},
     {{quant::reduce_requantize_blocks<true, false, false>,
       quant::reduce_requantize_blocks<true, false, true>},
      {quant::reduce_requantize_blocks<true, true, false>,
       quant::reduce_requantize_blocks<true, true, true>}}},
};

}  // namespace PYCOMM_ISA
}  // namespace kernels
}  // namespace pycomm

#endif  // PYCOMM_ISA
