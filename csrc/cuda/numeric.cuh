// The CPU kernels' float semantics, on the device (csrc/kernels/reduce_impl.h
// and quantize_impl.h are the reference; their results must be reproduced
// bit for bit):
// - arithmetic through __f*_rn / __d*_rn intrinsics, which nvcc never
//   contracts into FMAs (the build passes -fmad=false as well);
// - arithmetic NaN results replaced by the canonical quiet NaN, as apply()
//   does on the CPU: the GPU's own default NaN is 0x7FFFFFFF, x86's 0xFFC00000;
// - min/max select an operand (NaN wins, the second operand on ties);
// - half types widened exactly to float32 and narrowed with round to nearest
//   even, NaN to 0x7E00 (float16) / 0x7FC0 (bfloat16).
#pragma once

#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

namespace pycomm {
namespace cuda {

constexpr uint32_t kCanonicalNaN = 0x7FC00000u;          // float32 quiet_NaN()
constexpr uint64_t kCanonicalNaN64 = 0x7FF8000000000000ull;  // float64 quiet_NaN()
constexpr uint32_t kX86DefaultNaN = 0xFFC00000u;         // x86's NaN for inf-inf, 0*inf

__device__ __forceinline__ float canonical(float r) {
  return r != r ? __uint_as_float(kCanonicalNaN) : r;
}
__device__ __forceinline__ double canonical(double r) {
  return r != r ? __longlong_as_double(static_cast<long long>(kCanonicalNaN64)) : r;
}

// ---- Element types: storage as in memory, arithmetic in Compute -----------

template <class T> struct Plain {  // float, double and the integer types
  using Storage = T;
  using Compute = T;
  __device__ static T widen(T x) { return x; }
  __device__ static T narrow(T x) { return x; }
};

struct F16 {
  using Storage = uint16_t;
  using Compute = float;
  __device__ static float widen(uint16_t h) { return __half2float(__ushort_as_half(h)); }
  // cvt.rn.f16.f32: IEEE round to nearest even (overflow to inf, subnormals
  // rounded, not flushed), as vcvtps2ph and the CPU's software path.
  __device__ static uint16_t narrow(float f) {
    return f != f ? uint16_t(0x7E00) : __half_as_ushort(__float2half_rn(f));
  }
};

struct BF16 {
  using Storage = uint16_t;
  using Compute = float;
  __device__ static float widen(uint16_t h) { return __uint_as_float(uint32_t(h) << 16); }
  // The CPU's integer rounding, verbatim (no hardware conversion to doubt).
  __device__ static uint16_t narrow(float f) {
    if (f != f) return 0x7FC0;
    const uint32_t x = __float_as_uint(f);
    return static_cast<uint16_t>((x + 0x7FFFu + ((x >> 16) & 1u)) >> 16);
  }
};

// ---- Operators ---------------------------------------------------------------

enum class Op { kSum, kProd, kMin, kMax };

__device__ __forceinline__ float op_add(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double op_add(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ float op_mul(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double op_mul(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float op_div(float a, float b) { return __fdiv_rn(a, b); }
__device__ __forceinline__ double op_div(double a, double b) { return __ddiv_rn(a, b); }

// Integer sum/prod wrap like numpy, in unsigned arithmetic at least as wide as
// `unsigned` (as the CPU's WrapT).
template <class T>
using WrapT = std::conditional_t<(sizeof(T) < sizeof(unsigned)), unsigned, std::make_unsigned_t<T>>;

template <Op kOp, class T> __device__ __forceinline__ T apply(T a, T b) {
  if constexpr (kOp == Op::kMin) {
    return (a < b || a != a) ? a : b;
  } else if constexpr (kOp == Op::kMax) {
    return (a > b || a != a) ? a : b;
  } else if constexpr (std::is_integral_v<T>) {
    const WrapT<T> x = static_cast<WrapT<T>>(a), y = static_cast<WrapT<T>>(b);
    return static_cast<T>(kOp == Op::kSum ? WrapT<T>(x + y) : WrapT<T>(x * y));
  } else {
    return canonical(kOp == Op::kSum ? op_add(a, b) : op_mul(a, b));
  }
}

// ---- x86 NaN propagation (dequantize) ---------------------------------------
// The CPU's dequantize does not canonicalise: SSE/AVX return the first NaN
// operand, quieted, or 0xFFC00000 when an operation makes a NaN from non-NaNs.
// These reproduce that where the GPU would return its own 0x7FFFFFFF.

__device__ __forceinline__ float x86_nan(float a, float b) {
  if (a != a) return __uint_as_float(__float_as_uint(a) | 0x00400000u);
  if (b != b) return __uint_as_float(__float_as_uint(b) | 0x00400000u);
  return __uint_as_float(kX86DefaultNaN);
}
__device__ __forceinline__ float x86_mul(float a, float b) {
  const float r = __fmul_rn(a, b);
  return r != r ? x86_nan(a, b) : r;
}
// acc + product: when both are NaN, which one x86 returns depends on the
// operand order the compiler emitted; GCC 12 puts the product first on every
// ISA path (checked on the CPU kernels), so the product's NaN is taken here.
__device__ __forceinline__ float x86_accumulate(float acc, float product) {
  const float r = __fadd_rn(acc, product);
  return r != r ? x86_nan(product, acc) : r;
}

}  // namespace cuda
}  // namespace pycomm
