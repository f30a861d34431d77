// Int8 dequantization of device buffers (cuda_kernels.h: dequantize_int8,
// dequantize_accumulate_int8): out = q * scale, or acc = acc + q * scale,
// bitwise kernels::dequantize_int8 / dequantize_accumulate_int8, NaN bits
// included (numeric.cuh: x86_mul, x86_accumulate).
//
// Elementwise: each thread owns kUnroll chunks of 4 elements, strided by the
// block width, and loads all of them before it stores any. A chunk never
// straddles a quantization block (blocks are multiples of 32 elements).
#include <cuda_runtime.h>

#include "common/error.h"
#include "cuda/cuda_kernels.h"
#include "cuda/launch.cuh"
#include "cuda/numeric.cuh"
#include "kernels/quantize_int8.h"

namespace pycomm {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kUnroll = 4;

__device__ __forceinline__ size_t chunk_index(int u) {
  return (size_t(blockIdx.x) * kUnroll + u) * kThreads + threadIdx.x;
}

template <bool kAccumulate>
__global__ void __launch_bounds__(kThreads)
    dequantize_kernel(const int8_t* q, const float* scales, size_t count, int block_shift,
                      float* out, bool vec) {
  if (vec && (chunk_index(kUnroll - 1) + 1) * 4 <= count) {
    uint32_t w[kUnroll];
    float s[kUnroll];
    float4 acc[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const size_t i = chunk_index(u) * 4;
      w[u] = *reinterpret_cast<const uint32_t*>(q + i);
      s[u] = scales[i >> block_shift];
      if (kAccumulate) acc[u] = *reinterpret_cast<const float4*>(out + i);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      float r[4];
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        r[k] = x86_mul(static_cast<float>(int8_t(w[u] >> (8 * k))), s[u]);
      }
      if (kAccumulate) {
        r[0] = x86_accumulate(acc[u].x, r[0]);
        r[1] = x86_accumulate(acc[u].y, r[1]);
        r[2] = x86_accumulate(acc[u].z, r[2]);
        r[3] = x86_accumulate(acc[u].w, r[3]);
      }
      *reinterpret_cast<float4*>(out + chunk_index(u) * 4) = make_float4(r[0], r[1], r[2], r[3]);
    }
    return;
  }
  // The tail, or pointers not aligned for the vector path.
  for (int u = 0; u < kUnroll; ++u) {
    const size_t i0 = chunk_index(u) * 4;
    for (size_t i = i0; i < i0 + 4 && i < count; ++i) {
      const float p = x86_mul(static_cast<float>(q[i]), scales[i >> block_shift]);
      out[i] = kAccumulate ? x86_accumulate(out[i], p) : p;
    }
  }
}

template <bool kAccumulate>
void launch_dequantize(const int8_t* q, const float* scales, size_t count, size_t block_size,
                       float* out, void* stream, const char* name) {
  if (!kernels::quant_block_size_ok(block_size)) {
    throw_error(ErrorKind::kValue, strprintf("%s: block size %zu is not a power of two in "
                                             "[32, 4096]", name, block_size));
  }
  if (count == 0) return;
  use_device_of(stream, out);
  const int shift = __builtin_ctzll(block_size);
  const bool vec = aligned_to(q, 4) && aligned_to(out, 16);
  const unsigned grid = grid_size((count + 3) / 4, size_t(kThreads) * kUnroll, name);
  dequantize_kernel<kAccumulate><<<grid, kThreads, 0, as_stream(stream)>>>(q, scales, count,
                                                                           shift, out, vec);
  check_launch(name);
}

}  // namespace

void dequantize_int8(const int8_t* q, const float* scales, size_t count, size_t block_size,
                     float* out, void* stream) {
  launch_dequantize<false>(q, scales, count, block_size, out, stream, "dequantize_int8");
}

void dequantize_accumulate_int8(const int8_t* q, const float* scales, size_t count,
                                size_t block_size, float* acc, void* stream) {
  launch_dequantize<true>(q, scales, count, block_size, acc, stream,
                          "dequantize_accumulate_int8");
}

}  // namespace cuda
}  // namespace pycomm
