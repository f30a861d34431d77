// The int8 quantization of one block by a group of threads, shared by
// quantize_int8.cu and reduce_requantize_int8.cu.
//
// A group of G threads (a power of two, 8..256) owns one quantization block
// and holds it in registers, EPT elements per thread (G * EPT = block size):
// the input is read once, and q, the scale and the residual are written once.
// Thread `lane` of the group owns the 4-element chunks at lane*4 + c*G*4,
// c < EPT/4, so each load and store of a warp is contiguous. The block's
// max|v| comes from warp shuffles, and from shared memory when the group spans
// warps; no atomics.
//
// The arithmetic is quantize_impl.h's, operation for operation, in IEEE
// round-to-nearest intrinsics (no FMA contraction), so the bytes, scales and
// residual bits are the CPU's.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace pycomm {
namespace cuda {
namespace quant {

constexpr int kThreads = 256;  // per CUDA block; 256 / G quantization blocks each

// Elements per thread for a block size: 4 up to 1024-element blocks (G =
// block / 4 threads, 8 for the smallest), then 8 and 16 (G = 256).
inline int elems_per_thread(size_t block_size) {
  return block_size <= 1024 ? 4 : static_cast<int>(block_size / kThreads);
}

// The plain quantize kernel reads 4 bytes per element and does little else:
// it needs more loads in flight per thread to reach the copy bandwidth, so
// it takes 8 elements per thread from 64-element blocks up (G = block / 8).
inline int elems_per_thread_quantize(size_t block_size) {
  return block_size <= 32 ? 4 : block_size <= 2048 ? 8 : 16;
}

struct Group {
  int size;      // G
  int lane;      // this thread's index in its group
  size_t index;  // the quantization block
  size_t b0;     // its first element
  int n;         // its elements: block_size, fewer for the last, 0 past the end
};

template <int EPT> __device__ __forceinline__ Group make_group(int block_size, size_t count) {
  Group g;
  g.size = block_size / EPT;
  g.lane = threadIdx.x & (g.size - 1);
  g.index = size_t(blockIdx.x) * (kThreads / g.size) + threadIdx.x / g.size;
  g.b0 = g.index * block_size;
  g.n = g.b0 < count ? static_cast<int>(min(size_t(block_size), count - g.b0)) : 0;
  return g;
}

// Offset in the block of chunk c of this thread.
__device__ __forceinline__ int chunk_offset(const Group& g, int c) {
  return (c * g.size + g.lane) * 4;
}

// Whether this thread's chunks all lie inside its block, so that (with `vec`:
// the pointers allow it) each chunk is one vector access.
__device__ __forceinline__ bool whole_chunks(const Group& g, int chunks, bool vec) {
  return vec && chunk_offset(g, chunks - 1) + 4 <= g.n;
}

// This thread's EPT elements of the block at p, widened to float32 by E.
// kWhole: one 16-byte (8 for half types) load per chunk, with no branch in
// between, so all of them are in flight at once; else one by one, 0 past the
// block's end.
template <class E, int EPT, bool kWhole>
__device__ __forceinline__ void load_elems(const typename E::Storage* p, const Group& g,
                                           float (&out)[EPT]) {
  using S = typename E::Storage;
#pragma unroll
  for (int c = 0; c < EPT / 4; ++c) {
    const int e = chunk_offset(g, c);
    float* o = out + c * 4;
    if constexpr (!kWhole) {
#pragma unroll
      for (int k = 0; k < 4; ++k) o[k] = e + k < g.n ? E::widen(p[e + k]) : 0.0f;
    } else if constexpr (sizeof(S) == 4) {
      const float4 f = *reinterpret_cast<const float4*>(p + e);
      o[0] = f.x, o[1] = f.y, o[2] = f.z, o[3] = f.w;
    } else {
      const uint2 h = *reinterpret_cast<const uint2*>(p + e);
      o[0] = E::widen(S(h.x & 0xFFFFu)), o[1] = E::widen(S(h.x >> 16));
      o[2] = E::widen(S(h.y & 0xFFFFu)), o[3] = E::widen(S(h.y >> 16));
    }
  }
}

template <class E, int EPT>
__device__ __forceinline__ void load_elems(const typename E::Storage* p, const Group& g,
                                           bool whole, float (&out)[EPT]) {
  if (whole) {
    load_elems<E, EPT, true>(p, g, out);
  } else {
    load_elems<E, EPT, false>(p, g, out);
  }
}

// |v| as bits: for non-negative floats the integer order is the float order,
// and NaN > +Inf > every finite value, so one integer maximum gives both the
// block's max|v| and whether it holds a NaN or Inf (bits >= 0x7F800000),
// exactly and in any order. Every thread of the CUDA block must call it (G is
// the same for all: the branches below are uniform).
__device__ __forceinline__ uint32_t abs_bits(float v) { return __float_as_uint(v) & 0x7FFFFFFFu; }

__device__ __forceinline__ uint32_t group_max(uint32_t m, const Group& g, uint32_t* warp_max) {
  if (g.size < 32) {
    for (int off = 1; off < g.size; off <<= 1) m = max(m, __shfl_xor_sync(0xFFFFFFFFu, m, off));
    return m;
  }
  m = __reduce_max_sync(0xFFFFFFFFu, m);
  if (g.size == 32) return m;
  if ((threadIdx.x & 31) == 0) warp_max[threadIdx.x / 32] = m;
  __syncthreads();
  const int first = (threadIdx.x / g.size) * (g.size / 32);
  for (int w = 0; w < g.size / 32; ++w) m = max(m, warp_max[first + w]);
  return m;
}

// ---- quantize_impl.h's scalar steps ----------------------------------------------

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;

// u in [0, 1) from (seed, index): splitmix64's finaliser, top 24 bits.
__device__ __forceinline__ float uniform24(uint64_t seed, uint64_t index) {
  uint64_t z = (seed ^ (index * kGolden)) + kGolden;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return __fmul_rn(static_cast<float>(static_cast<int32_t>(z >> 40)), 0x1p-24f);
}

// The CPU's (t + 1.5 * 2^23) - 1.5 * 2^23, not rintf: they differ in the sign
// of a zero result (-0.3 gives +0 here), which reaches the residual's bits.
__device__ __forceinline__ float rne(float t) {
  return __fsub_rn(__fadd_rn(t, 12582912.0f), 12582912.0f);
}

__device__ __forceinline__ float clamp127(float t) {
  t = t < -127.0f ? -127.0f : t;
  return t > 127.0f ? 127.0f : t;
}

// q of one element, as a float (v finite, scale > 0).
__device__ __forceinline__ float quantize_one(float v, float scale, bool stochastic,
                                              uint64_t seed, uint64_t index) {
  if (stochastic) {
    const float s = clamp127(__fadd_rn(__fdiv_rn(v, scale), uniform24(seed, index)));
    const float r = rne(s);
    return __fsub_rn(r, r > s ? 1.0f : 0.0f);  // floor
  }
  return rne(clamp127(__fdiv_rn(v, scale)));
}

__device__ __forceinline__ uint32_t pack_q(const float (&r)[4]) {
  uint32_t w = 0;
#pragma unroll
  for (int k = 0; k < 4; ++k) w |= uint32_t(uint8_t(int8_t(int32_t(r[k])))) << (8 * k);
  return w;
}

// Quantizes the group's block from registers (v: this thread's EPT values,
// absmax_bits: group_max of their abs_bits) and writes q, the scale and the
// residual (when not null). `vec`: q is 4-byte and residual 16-byte aligned.
template <int EPT>
__device__ __forceinline__ void quantize_store(const float (&v)[EPT], const Group& g,
                                               uint32_t absmax_bits, bool stochastic,
                                               uint64_t seed, float* residual, int8_t* q,
                                               float* scales, bool vec) {
  if (g.n == 0) return;
  const bool finite = absmax_bits < 0x7F800000u;
  // NaN or Inf in the block: scale NaN, q 0, residual reset (a NaN must not stick).
  const float scale =
      finite ? __fdiv_rn(__uint_as_float(absmax_bits), 127.0f) : __uint_as_float(0x7FC00000u);
  if (g.lane == 0) scales[g.index] = scale;
#pragma unroll
  for (int c = 0; c < EPT / 4; ++c) {
    const int e = chunk_offset(g, c);
    if (e >= g.n) break;
    float r[4], res[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const float x = v[c * 4 + k];
      if (!finite) {
        r[k] = 0.0f;
        res[k] = 0.0f;
      } else if (scale == 0.0f) {  // all zeros, or max|v| / 127 underflows
        r[k] = 0.0f;
        res[k] = x;  // v - 0 * 0 == v
      } else {
        r[k] = quantize_one(x, scale, stochastic, seed, g.b0 + e + k);
        res[k] = __fsub_rn(x, __fmul_rn(r[k], scale));
      }
    }
    const size_t i = g.b0 + e;
    if (vec && e + 4 <= g.n) {
      *reinterpret_cast<uint32_t*>(q + i) = pack_q(r);
      if (residual) {
        *reinterpret_cast<float4*>(residual + i) = make_float4(res[0], res[1], res[2], res[3]);
      }
    } else {
      for (int k = 0; k < 4 && e + k < g.n; ++k) {
        q[i + k] = int8_t(int32_t(r[k]));
        if (residual) residual[i + k] = res[k];
      }
    }
  }
}

}  // namespace quant
}  // namespace cuda
}  // namespace pycomm
