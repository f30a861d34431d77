// A rank's own contribution to a compressed reduction, in float32
// (cuda_kernels.h: widen_to_float32): exact widening plus the residual,
// bitwise kernels::widen_to_float32. It never travels, so it is never
// quantized; only the owner's slice goes through here.
#include <cuda_runtime.h>

#include <algorithm>
#include <string>

#include "cuda/cuda_kernels.h"
#include "cuda/launch.cuh"
#include "cuda/numeric.cuh"

namespace pycomm {
namespace cuda {
namespace {

constexpr int kThreads = 256;

template <class E>
__global__ void __launch_bounds__(kThreads)
    widen_kernel(const typename E::Storage* x, size_t count, const float* residual, float* out) {
  const size_t stride = size_t(gridDim.x) * kThreads;
  for (size_t i = size_t(blockIdx.x) * kThreads + threadIdx.x; i < count; i += stride) {
    const float v = E::widen(x[i]);
    out[i] = residual ? __fadd_rn(v, residual[i]) : v;
  }
}

template <class E>
void launch_widen(const void* x, size_t count, const float* residual, float* out, void* stream) {
  // Enough blocks to fill any GPU; the grid-stride loop does the rest.
  const unsigned grid = grid_size(std::min<size_t>(count, size_t(kThreads) * 4096), kThreads, "widen");
  widen_kernel<E><<<grid, kThreads, 0, as_stream(stream)>>>(
      static_cast<const typename E::Storage*>(x), count, residual, out);
  check_launch("widen kernel launch");
}

}  // namespace

void widen_to_float32(const void* x, DType dtype, size_t count, const float* residual,
                      float* out, void* stream) {
  if (count == 0) return;
  use_device_of(stream, out);
  switch (dtype) {
    case DType::kFloat32: return launch_widen<Plain<float>>(x, count, residual, out, stream);
    case DType::kFloat16: return launch_widen<F16>(x, count, residual, out, stream);
    case DType::kBFloat16: return launch_widen<BF16>(x, count, residual, out, stream);
    default:
      throw_error(ErrorKind::kValue, std::string("widen_to_float32: dtype ") + dtype_name(dtype) +
                                         " is not float32, float16 or bfloat16");
  }
}

}  // namespace cuda
}  // namespace pycomm
