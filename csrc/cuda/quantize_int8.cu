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

template <class E, int EPT>
__global__ void __launch_bounds__(quant::kThreads)
    quantize_kernel(const typename E::Storage* x, size_t count, int block_size, bool stochastic,
                    uint64_t seed, float* residual, int8_t* q, float* scales, bool vec) {
  __shared__ uint32_t warp_max[quant::kThreads / 32];
  const Group g = quant::make_group<EPT>(block_size, count);
  const bool whole = quant::whole_chunks(g, EPT / 4, vec);
  float v[EPT];
  quant::load_elems<E, EPT>(x + g.b0, g, whole, v);
  if (residual) {
    float r[EPT];
    quant::load_elems<Plain<float>, EPT>(residual + g.b0, g, whole, r);
#pragma unroll
    for (int j = 0; j < EPT; ++j) v[j] = __fadd_rn(v[j], r[j]);
  }
  uint32_t m = 0;  // past the block's end v is 0, which leaves the maximum alone
#pragma unroll
  for (int j = 0; j < EPT; ++j) m = max(m, quant::abs_bits(v[j]));
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
  const int ept = quant::elems_per_thread_quantize(block_size);
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
