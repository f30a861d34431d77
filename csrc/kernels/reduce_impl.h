// Reduction kernels, written once and compiled once per instruction set.
//
// Included twice by each per-ISA file (reduce_baseline.cpp, reduce_avx2.cpp,
// reduce_avx512.cpp):
//   1. before its `#pragma GCC target`: the headers and the KernelTable type,
//      so that inline code from standard headers is compiled for the default
//      target only (an AVX-512 copy of std::anything chosen by the linker
//      would crash older CPUs);
//   2. after the pragma, with PYCOMM_ISA (a namespace name) and
//      PYCOMM_ISA_LEVEL (0 baseline, 1 AVX2+F16C, 2 AVX-512) defined: the
//      kernel bodies, in a namespace of their own so that instantiations for
//      different ISAs never merge under the ODR.
// dispatch.cpp includes it once, for the table type only.
//
// Every path computes bit-identical results, so ranks on different CPUs
// agree: float ops are elementwise (no reassociation), the software half
// conversions round exactly as F16C/AVX-512 do, and NaNs produced by
// arithmetic or by narrowing to a half type are canonical (see apply()).

#ifndef PYCOMM_KERNELS_REDUCE_IMPL_DECLS
#define PYCOMM_KERNELS_REDUCE_IMPL_DECLS

#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "reduce.h"

namespace pycomm {
namespace kernels {

using ReduceFn = void (*)(void* dst, const void* a, const void* b, size_t count);
using DivideFn = void (*)(void* dst, size_t count, double divisor);
using CopyFn = void (*)(void* dst, const void* src, size_t bytes);

// Indexed [dtype][op]: a call through the table is one load and one jump.
struct KernelTable {
  ReduceFn reduce[kNumDTypes][kNumRedOps];
  DivideFn divide[kNumDTypes];
  CopyFn copy;
  CopyFn copy_stream;
};

const KernelTable* baseline_table();
const KernelTable* avx2_table();
const KernelTable* avx512_table();

}  // namespace kernels
}  // namespace pycomm

#endif  // PYCOMM_KERNELS_REDUCE_IMPL_DECLS

#ifdef PYCOMM_ISA

namespace pycomm {
namespace kernels {
namespace PYCOMM_ISA {

// ---- Operators: one definition for scalars and GCC vector types ----------
// NaN propagates like np.minimum/np.maximum; on ties (including -0 vs +0)
// the second operand wins, as in numpy.

struct Sum {
  template <class T> T operator()(T a, T b) const { return a + b; }
};
struct Prod {
  template <class T> T operator()(T a, T b) const { return a * b; }
};
struct Min {
  template <class T> T operator()(T a, T b) const { return (a < b || a != a) ? a : b; }
};
struct Max {
  template <class T> T operator()(T a, T b) const { return (a > b || a != a) ? a : b; }
};

struct Div {
  template <class T> T operator()(T a, T b) const { return a / b; }
};

// Integer sum/prod wrap around like numpy: computed in unsigned arithmetic
// at least as wide as `unsigned` (narrower types would promote to signed int,
// where uint16*uint16 could overflow).
template <class T>
using WrapT = std::conditional_t<(sizeof(T) < sizeof(unsigned)), unsigned, std::make_unsigned_t<T>>;

// Float arithmetic returns the canonical quiet NaN for any NaN result: which
// input NaN x86 returns when both are NaN depends on operand order, which the
// compiler picks differently for scalar and vector code. Min/max select an
// operand, which is already deterministic.
template <class Op, class T> inline T apply(Op op, T a, T b) {
  constexpr bool arith = !std::is_same_v<Op, Min> && !std::is_same_v<Op, Max>;
  if constexpr (std::is_integral_v<T> && arith) {
    return static_cast<T>(op(static_cast<WrapT<T>>(a), static_cast<WrapT<T>>(b)));
  } else if constexpr (std::is_floating_point_v<T> && arith) {
    const T r = op(a, b);
    return r != r ? std::numeric_limits<T>::quiet_NaN() : r;
  } else {
    return op(a, b);
  }
}

// ---- Plain types: loops GCC vectorises for the target ISA ---------------
// ivdep: dst may alias a or b exactly, which is safe to vectorise (each lane
// reads before it writes); without it GCC falls back to scalar code when
// dst == a.

template <class T, class Op>
void reduce_plain(void* dst, const void* a, const void* b, size_t n) {
  T* d = static_cast<T*>(dst);
  const T* x = static_cast<const T*>(a);
  const T* y = static_cast<const T*>(b);
#pragma GCC ivdep
  for (size_t i = 0; i < n; ++i) d[i] = apply(Op{}, x[i], y[i]);
}

template <class T>
void divide_plain(void* dst, size_t n, double divisor) {
  T* d = static_cast<T*>(dst);
  const T div = static_cast<T>(divisor);
  for (size_t i = 0; i < n; ++i) d[i] = apply(Div{}, d[i], div);
}

// ---- Half types: software conversions (scalar path and vector tails) -----

inline uint32_t f32_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
inline float bits_f32(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }

constexpr uint32_t kCanonicalNaN = 0x7FC00000u;  // quiet_NaN(); narrows to 0x7E00 / 0x7FC0

// Branch-free, with selects written as bit masks (GCC's if-conversion
// gives up on the ?: forms), so the baseline loops vectorise with SSE2.
// After Marat Dukhan's FP16 library (MIT); the FPU does the rounding, RNE.
inline uint32_t blend_bits(bool c, uint32_t x, uint32_t y) {
  const uint32_t m = 0u - static_cast<uint32_t>(c);
  return (x & m) | (y & ~m);
}

struct F16 {
  static float widen(uint16_t h) {
    const uint32_t w = uint32_t(h) << 16, sign = w & 0x80000000u, two_w = w + w;
    // Normal, inf, NaN: shift into place and rebias the exponent by 2^-112.
    const float normal = bits_f32((two_w >> 4) + (0xE0u << 23)) * 0x1p-112f;
    // Zero, subnormal: the mantissa placed under 0.5's exponent, minus 0.5.
    const float subnormal = bits_f32((two_w >> 17) | (126u << 23)) - 0.5f;
    return bits_f32(sign | blend_bits(two_w < (1u << 27), f32_bits(subnormal), f32_bits(normal)));
  }
  // Round to nearest even, like vcvtps2ph with _MM_FROUND_TO_NEAREST_INT;
  // NaN -> canonical 0x7E00.
  static uint16_t narrow(float f) {
    const uint32_t w = f32_bits(f), shl1_w = w + w;
    // |f| * 4, where values too large for float16 overflow to inf.
    float base = (__builtin_fabsf(f) * 0x1p+112f) * 0x1p-110f;
    // Adding 2^(exponent of f + 15) leaves float32 exactly float16's mantissa
    // bits for base (fewer for float16 subnormals, via the minimum), so the
    // FPU's round-to-nearest-even is float16's.
    const uint32_t bias = shl1_w & 0xFF000000u;
    const uint32_t min_bias = 0x71000000u;
    base = bits_f32((blend_bits(bias < min_bias, min_bias, bias) >> 1) + 0x07800000u) + base;
    const uint32_t bits = f32_bits(base);
    const uint32_t h = ((w >> 16) & 0x8000u) + ((bits >> 13) & 0x7C00u) + (bits & 0x0FFFu);
    return static_cast<uint16_t>(blend_bits(shl1_w > 0xFF000000u, 0x7E00u, h));  // NaN
  }
};

struct BF16 {
  static float widen(uint16_t h) { return bits_f32(uint32_t(h) << 16); }
  // As torch's c10::BFloat16: round to nearest even, NaN -> quiet 0x7FC0.
  static uint16_t narrow(float f) {
    if (f != f) return 0x7FC0;
    const uint32_t x = f32_bits(f);
    return static_cast<uint16_t>((x + 0x7FFFu + ((x >> 16) & 1)) >> 16);
  }
};

// ---- Half types: vector loads and stores for this ISA --------------------
// Lanes are widened to float32 (VecF, a GCC vector type, so the operators
// above apply), combined, NaNs canonicalised, and narrowed with RNE.

#if PYCOMM_ISA_LEVEL >= 1

// _mm512_maskz_*: the unmasked AVX-512 forms trip a false
// -Wmaybe-uninitialized in GCC 12's headers; an all-ones mask compiles to the
// same instruction.
#if PYCOMM_ISA_LEVEL >= 2
using VecF = __m512;
using VecFI = __m512i;    // VecF's bits, as intrinsics want them
using HalfVec = __m256i;  // kW half values
constexpr size_t kW = 16;
inline VecF f16_to_vec(HalfVec h) { return _mm512_maskz_cvtph_ps(0xFFFF, h); }
inline HalfVec vec_to_f16(VecF v) {
  return _mm512_maskz_cvtps_ph(0xFFFF, v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
inline VecFI u16_to_u32(HalfVec h) { return _mm512_maskz_cvtepu16_epi32(0xFFFF, h); }
inline HalfVec u32_to_u16(VecFI u) { return _mm512_maskz_cvtepi32_epi16(0xFFFF, u); }  // truncates
#else
using VecF = __m256;
using VecFI = __m256i;
using HalfVec = __m128i;
constexpr size_t kW = 8;
inline VecF f16_to_vec(HalfVec h) { return _mm256_cvtph_ps(h); }
inline HalfVec vec_to_f16(VecF v) {
  return _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
inline VecFI u16_to_u32(HalfVec h) { return _mm256_cvtepu16_epi32(h); }
inline HalfVec u32_to_u16(VecFI u) {  // values are < 2^16: saturation is exact
  return _mm_packus_epi32(_mm256_castsi256_si128(u), _mm256_extracti128_si256(u, 1));
}
#endif

typedef uint32_t VecU __attribute__((vector_size(sizeof(VecF))));

inline HalfVec load_half(const uint16_t* p) {
  HalfVec h;
  std::memcpy(&h, p, sizeof h);
  return h;
}
inline void store_half(uint16_t* p, HalfVec h) { std::memcpy(p, &h, sizeof h); }

inline VecF canonical_nan(VecF v) {
  const VecU nan = VecU{} + kCanonicalNaN;
  return (VecF)((v != v) ? nan : (VecU)v);
}

struct F16Vec {
  static VecF load(const uint16_t* p) { return f16_to_vec(load_half(p)); }
  static void store(uint16_t* p, VecF v) { store_half(p, vec_to_f16(canonical_nan(v))); }
};

struct BF16Vec {
  static VecF load(const uint16_t* p) {
    return (VecF)((VecU)u16_to_u32(load_half(p)) << 16);
  }
  static void store(uint16_t* p, VecF v) {
    VecU x = (VecU)v;
    x = (x + 0x7FFFu + ((x >> 16) & 1u)) >> 16;
    x = (v != v) ? VecU{} + 0x7FC0u : x;
    store_half(p, u32_to_u16((VecFI)x));
  }
};

template <class Half> struct VecOf;
template <> struct VecOf<F16> { using type = F16Vec; };
template <> struct VecOf<BF16> { using type = BF16Vec; };

#endif  // PYCOMM_ISA_LEVEL >= 1

// dst[i] = narrow(f(widen(a[i]), widen(b[i]))); f works on floats and VecF.
template <class Half, class F>
void map_half(uint16_t* d, const uint16_t* a, const uint16_t* b, size_t n, F f) {
  size_t i = 0;
#if PYCOMM_ISA_LEVEL >= 1
  using V = typename VecOf<Half>::type;
  for (; i + kW <= n; i += kW) V::store(d + i, f(V::load(a + i), V::load(b + i)));
#endif
#pragma GCC ivdep
  for (; i < n; ++i) d[i] = Half::narrow(f(Half::widen(a[i]), Half::widen(b[i])));
}

template <class Half, class Op>
void reduce_half(void* dst, const void* a, const void* b, size_t n) {
  map_half<Half>(static_cast<uint16_t*>(dst), static_cast<const uint16_t*>(a),
                 static_cast<const uint16_t*>(b), n, Op{});
}

template <class Half>
void divide_half(void* dst, size_t n, double divisor) {
  uint16_t* d = static_cast<uint16_t*>(dst);
  const float div = static_cast<float>(divisor);
  // NaN results are canonicalised when narrowed.
  map_half<Half>(d, d, d, n, [div](auto x, auto) { return x / div; });
}

// Integer averages are not defined (callers divide floating types only), so
// divide() on an integer dtype is deliberately a no-op.
inline void divide_noop(void*, size_t, double) {}

// ---- The table ------------------------------------------------------------

template <class T> struct Kernels {  // float, double and integer types
  template <class Op> static constexpr ReduceFn reduce = reduce_plain<T, Op>;
  static constexpr DivideFn divide =
      std::is_floating_point_v<T> ? DivideFn(divide_plain<T>) : DivideFn(divide_noop);
};
template <> struct Kernels<F16> {
  template <class Op> static constexpr ReduceFn reduce = reduce_half<F16, Op>;
  static constexpr DivideFn divide = divide_half<F16>;
};
template <> struct Kernels<BF16> {
  template <class Op> static constexpr ReduceFn reduce = reduce_half<BF16, Op>;
  static constexpr DivideFn divide = divide_half<BF16>;
};

// A plain vector loop: glibc's memcpy takes `rep movsb` for these sizes,
// which on AMD Zen runs at under half speed for some source/destination
// alignments (measured 8 vs 20 GB/s), and the transports copy at every
// alignment.
void copy_bytes(void* dst, const void* src, size_t bytes) {
  constexpr size_t kVec = PYCOMM_ISA_LEVEL == 2 ? 64 : PYCOMM_ISA_LEVEL == 1 ? 32 : 16;
  typedef uint8_t V __attribute__((vector_size(kVec)));
  auto* d = static_cast<uint8_t*>(dst);
  auto* s = static_cast<const uint8_t*>(src);
  size_t i = 0;
  for (; i + 4 * kVec <= bytes; i += 4 * kVec) {
    V v[4];
    std::memcpy(v, s + i, sizeof(v));  // unaligned vector loads and stores
    std::memcpy(d + i, v, sizeof(v));
  }
  std::memcpy(d + i, s + i, bytes - i);
}

// One vector from s (any alignment) to d (vector-aligned), not through the cache.
inline void stream_vector(uint8_t* d, const uint8_t* s) {
#if PYCOMM_ISA_LEVEL == 2
  _mm512_stream_si512(reinterpret_cast<__m512i*>(d), _mm512_loadu_si512(s));
#elif PYCOMM_ISA_LEVEL == 1
  _mm256_stream_si256(reinterpret_cast<__m256i*>(d), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s)));
#else
  _mm_stream_si128(reinterpret_cast<__m128i*>(d), _mm_loadu_si128(reinterpret_cast<const __m128i*>(s)));
#endif
}

// copy_bytes with non-temporal stores from dst's first vector-aligned byte
// (they need aligned addresses); the fence orders them before what follows.
void stream_bytes(void* dst, const void* src, size_t bytes) {
  constexpr size_t kVec = PYCOMM_ISA_LEVEL == 2 ? 64 : PYCOMM_ISA_LEVEL == 1 ? 32 : 16;
  auto* d = static_cast<uint8_t*>(dst);
  auto* s = static_cast<const uint8_t*>(src);
  const size_t to_aligned = (kVec - reinterpret_cast<uintptr_t>(d) % kVec) % kVec;  // no std::min here: see the top
  const size_t head = to_aligned < bytes ? to_aligned : bytes;
  copy_bytes(d, s, head);
  size_t i = head;
  for (; i + 4 * kVec <= bytes; i += 4 * kVec)
    for (size_t k = 0; k < 4 * kVec; k += kVec) stream_vector(d + i + k, s + i + k);
  _mm_sfence();
  copy_bytes(d + i, s + i, bytes - i);
}

// Rows in RedOp order; kAvg reduces as a sum (the caller divides afterwards).
#define PYCOMM_ROW(T)                                                             \
  {                                                                               \
    Kernels<T>::reduce<Sum>, Kernels<T>::reduce<Prod>, Kernels<T>::reduce<Min>,   \
        Kernels<T>::reduce<Max>, Kernels<T>::reduce<Sum>                          \
  }

// In DType order.
constexpr KernelTable kTable = {
    {PYCOMM_ROW(float), PYCOMM_ROW(double), PYCOMM_ROW(F16), PYCOMM_ROW(BF16),
     PYCOMM_ROW(int8_t), PYCOMM_ROW(uint8_t), PYCOMM_ROW(int32_t), PYCOMM_ROW(int64_t)},
    {Kernels<float>::divide, Kernels<double>::divide, Kernels<F16>::divide,
     Kernels<BF16>::divide, Kernels<int8_t>::divide, Kernels<uint8_t>::divide,
     Kernels<int32_t>::divide, Kernels<int64_t>::divide},
    copy_bytes,
    stream_bytes,
};

#undef PYCOMM_ROW

static_assert(static_cast<int>(DType::kFloat32) == 0 && static_cast<int>(DType::kInt64) == 7,
              "kTable rows follow DType order");
static_assert(static_cast<int>(RedOp::kSum) == 0 && static_cast<int>(RedOp::kAvg) == 4,
              "kTable columns follow RedOp order");

}  // namespace PYCOMM_ISA
}  // namespace kernels
}  // namespace pycomm

#endif  // PYCOMM_ISA
