// runtime.h and cuda_kernels.h for a build without CUDA: no device, and every
// call that needs one says how to get a build that has it. Code that calls the
// CUDA layer therefore compiles and links either way.
#ifndef PYCOMM_WITH_CUDA

#include <stdexcept>

#include "cuda/cuda_kernels.h"
#include "cuda/runtime.h"

namespace pycomm {
namespace cuda {

namespace {

[[noreturn]] void not_built() {
  throw std::runtime_error(
      "pycomm was built without CUDA (no nvcc and libcudart_static.a at build time, or "
      "PYCOMM_CUDA=0); rebuild with a CUDA toolkit, e.g. PYCOMM_CUDA=1 pip install -e .");
}

}  // namespace

bool built() { return false; }
std::vector<std::string> archs() { return {}; }
int device_count() { return 0; }
std::string no_device_reason() { return "pycomm was built without CUDA"; }
std::string device_name(int) { not_built(); }
int runtime_version() { return 0; }
int driver_version() { return 0; }
void require_device() { not_built(); }
void use_device_of(void*, const void*) { not_built(); }
void check(int, const char*) { not_built(); }

void reduce(void*, const void*, const void*, size_t, DType, RedOp, void*) { not_built(); }
void reduce_n(void*, const void* const*, int, size_t, DType, RedOp, void*) { not_built(); }
void reduce_n_to(void* const*, int, const void* const*, int, size_t, DType, RedOp, double, void*) {
  not_built();
}
void divide(void*, size_t, DType, double, void*) { not_built(); }
void widen_to_float32(const void*, DType, size_t, const float*, float*, void*) { not_built(); }
void quantize_int8(const void*, DType, size_t, size_t, bool, uint64_t, float*, int8_t*, float*,
                   void*) {
  not_built();
}
void dequantize_int8(const int8_t*, const float*, size_t, size_t, float*, void*) { not_built(); }
void dequantize_accumulate_int8(const int8_t*, const float*, size_t, size_t, float*, void*) {
  not_built();
}
void reduce_requantize_int8(const int8_t* const*, const float* const*, int, size_t, size_t,
                            float, bool, uint64_t, float*, int8_t*, float*, const float*, int,
                            void*) {
  not_built();
}

}  // namespace cuda
}  // namespace pycomm

#endif  // PYCOMM_WITH_CUDA
