// Block-wise int8 quantization of float32/float16/bfloat16 device buffers
// (cuda_kernels.h: quantize_int8), bitwise kernels::quantize_int8: one group
// of threads per quantization block (quant_block.cuh).
#include <cuda_runtime.h>

#include "common/error.h"
#include "cuda/cuda_kernels.h"
#include "cuda/launch.cuh"
#include "cuda/numeric.cuh"
#include "cuda/quant_block.cuh"
#include "kernels/quantize_int8.h"

namespace pycomm {
namespace cuda {
namespace {

using quant::Group;

// Four consecutive inputs widened to float32 (exactly), from one 16-byte
// (float32) or 8-byte (half types) load when `whole`, else one by one.
template <class E>
__device__ __forceinline__ void load4(const typename E::Storage* x, int avail, bool whole,
                                      float (&out)[4]) {
  using S = typename E::Storage;
  if (whole) {
    if constexpr (sizeof(S) == 4) {
      const float4 f = *reinterpret_cast<const float4*>(x);
      out[0] = f.x, out[1] = f.y, out[2] = f.z, out[3] = f.w;
    } else {
      const uint2 h = *reinterpret_cast<const uint2*>(x);
      out[0] = E::widen(S(h.x & 0xFFFFu)), out[1] = E::widen(S(h.x >> 16));
      out[2] = E::widen(S(h.y & 0xFFFFu)), out[3] = E::widen(S(h.y >> 16));
    }
    return;
  }
#pragma unroll
  for (int k = 0; k < 4; ++k) out[k] = k < avail ? E::widen(x[k]) : 0.0f;
}

template <class E, int EPT>
__global__ void __launch_bounds__(quant::kThreads)
    quantize_kernel(const typename E::Storage* x, size_t count, int block_size, bool stochastic,
                    uint64_t seed, float* residual, int8_t* q, float* scales, bool vec) {
  __shared__ uint32_t warp_max[quant::kThreads / 32];
  const Group g = quant::make_group<EPT>(block_size, count);
  float v[EPT];
  uint32_t m = 0;
#pragma unroll
  for (int c = 0; c < EPT / 4; ++c) {
    const int e = quant::chunk_offset(g, c);
    const int avail = g.n - e;  // may be <= 0: the chunk is past the block's end
    const bool whole = vec && avail >= 4;
    float x4[4];
    load4<E>(x + g.b0 + e, avail, whole, x4);
    if (residual) {
      float r4[4];
      load4<Plain<float>>(residual + g.b0 + e, avail, whole, r4);
#pragma unroll
      for (int k = 0; k < 4; ++k) x4[k] = __fadd_rn(x4[k], r4[k]);
    }
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      v[c * 4 + k] = x4[k];
      m = max(m, quant::abs_bits(x4[k]));
    }
  }
  m = quant::group_max(m, g, warp_max);
  quant::quantize_store<EPT>(v, g, m, stochastic, seed, residual, q, scales, vec);
}

template <class E>
void launch_quantize(const void* x, size_t count, size_t block_size, bool stochastic,
                     uint64_t seed, float* residual, int8_t* q, float* scales,
                     cudaStream_t stream) {
  using S = typename E::Storage;
  const bool vec = aligned_to(x, 4 * sizeof(S)) && aligned_to(q, 4) &&
                   (residual == nullptr || aligned_to(residual, 16));
  const int ept = quant::elems_per_thread(block_size);
  const size_t groups_per_cta = quant::kThreads / (block_size / ept);
  const unsigned grid =
      grid_size(kernels::quant_num_blocks(count, block_size), groups_per_cta, "quantize_int8");
  const auto* xs = static_cast<const S*>(x);
  const int bs = static_cast<int>(block_size);
  switch (ept) {
    case 4:
      quantize_kernel<E, 4><<<grid, quant::kThreads, 0, stream>>>(
          xs, count, bs, stochastic, seed, residual, q, scales, vec);
      break;
    case 8:
      quantize_kernel<E, 8><<<grid, quant::kThreads, 0, stream>>>(
          xs, count, bs, stochastic, seed, residual, q, scales, vec);
      break;
    default:
      quantize_kernel<E, 16><<<grid, quant::kThreads, 0, stream>>>(
          xs, count, bs, stochastic, seed, residual, q, scales, vec);
      break;
  }
  check_launch("quantize_int8 kernel launch");
}

}  // namespace

void quantize_int8(const void* x, DType dtype, size_t count, size_t block_size, bool stochastic,
                   uint64_t seed, float* residual, int8_t* q, float* scales, void* stream) {
  if (!kernels::quant_block_size_ok(block_size)) {
    throw_error(ErrorKind::kValue, strprintf("quantize_int8: block size %zu is not a power of "
                                             "two in [32, 4096]", block_size));
  }
  if (count == 0) return;
  use_device_of(stream, x);
  const cudaStream_t s = as_stream(stream);
  switch (dtype) {
    case DType::kFloat32:
      return launch_quantize<Plain<float>>(x, count, block_size, stochastic, seed, residual, q,
                                           scales, s);
    case DType::kFloat16:
      return launch_quantize<F16>(x, count, block_size, stochastic, seed, residual, q, scales, s);
    case DType::kBFloat16:
      return launch_quantize<BF16>(x, count, block_size, stochastic, seed, residual, q, scales,
                                   s);
    default:
      throw_error(ErrorKind::kType, strprintf("quantize_int8: %s input (float32, float16 or "
                                              "bfloat16 expected)", dtype_name(dtype)));
  }
}

}  // namespace cuda
}  // namespace pycomm
