// Device discovery and CUDA error reporting (runtime.h).
#include <cuda_runtime.h>

#include <atomic>
#include <initializer_list>

#include "common/error.h"
#include "cuda/runtime.h"

namespace pycomm {
namespace cuda {

namespace {

// cudaGetDeviceCount's verdict, cached once positive: devices do not come and
// go in a process, and the kernels ask before every launch.
std::atomic<int> g_count{-1};

int query_count(cudaError_t* err) {
  int n = 0;
  *err = cudaGetDeviceCount(&n);
  if (*err != cudaSuccess) {
    cudaGetLastError();  // leave no sticky error behind for the next call
    return 0;
  }
  return n;
}

}  // namespace

bool built() { return true; }

std::vector<std::string> archs() {
  // nvcc's list of the architectures this file is compiled for (e.g. 800, 900).
  std::vector<std::string> out;
  for (int arch : {__CUDA_ARCH_LIST__}) out.push_back(strprintf("sm_%d", arch / 10));
  return out;
}

int device_count() {
  int n = g_count.load(std::memory_order_relaxed);
  if (n > 0) return n;
  cudaError_t err;
  n = query_count(&err);
  if (n > 0) g_count.store(n, std::memory_order_relaxed);
  return n;
}

std::string no_device_reason() {
  cudaError_t err;
  if (query_count(&err) > 0) return "";
  switch (err) {
    case cudaSuccess:
    case cudaErrorNoDevice:
      return "no CUDA device is visible (check CUDA_VISIBLE_DEVICES)";
    case cudaErrorInsufficientDriver:
      return strprintf("no NVIDIA driver was found, or it is older than the CUDA %d.%d "
                       "runtime pycomm was built with",
                       CUDART_VERSION / 1000, CUDART_VERSION % 1000 / 10);
    default:
      return strprintf("cudaGetDeviceCount failed: %s (%s)", cudaGetErrorString(err),
                       cudaGetErrorName(err));
  }
}

std::string device_name(int index) {
  require_device();
  if (index < 0 || index >= device_count()) {
    throw_error(ErrorKind::kValue, strprintf("CUDA device %d does not exist (%d visible)", index,
                                             device_count()));
  }
  cudaDeviceProp prop;
  check(cudaGetDeviceProperties(&prop, index), "cudaGetDeviceProperties");
  return prop.name;
}

int runtime_version() { return CUDART_VERSION; }

int driver_version() {
  int v = 0;
  if (cudaDriverGetVersion(&v) != cudaSuccess) return 0;
  return v;
}

void require_device() {
  if (device_count() > 0) return;
  throw_error(ErrorKind::kComm, "pycomm: no CUDA device: " + no_device_reason());
}

void use_device_of(void* stream, const void* ptr) {
  int want = -1;
  if (stream != nullptr) {
    check(cudaStreamGetDevice(static_cast<cudaStream_t>(stream), &want), "cudaStreamGetDevice");
  } else if (ptr != nullptr) {
    cudaPointerAttributes attr;
    check(cudaPointerGetAttributes(&attr, ptr), "cudaPointerGetAttributes");
    if (attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged) {
      want = attr.device;
    }
  }
  if (want < 0) return;
  int now = -1;
  check(cudaGetDevice(&now), "cudaGetDevice");
  if (now != want) check(cudaSetDevice(want), "cudaSetDevice");
}

void check(int code, const char* what) {
  const auto err = static_cast<cudaError_t>(code);
  if (err == cudaSuccess) return;
  cudaGetLastError();  // clear a non-sticky error so the next call starts clean
  throw_error(ErrorKind::kComm, strprintf("CUDA error in %s: %s (%s)", what,
                                          cudaGetErrorString(err), cudaGetErrorName(err)));
}

}  // namespace cuda
}  // namespace pycomm
