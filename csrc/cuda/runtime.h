// The CUDA runtime as the rest of pycomm sees it: plain C++, no CUDA headers,
// so bindings and collectives compile with or without a CUDA toolkit. With
// CUDA (PYCOMM_WITH_CUDA) the definitions are in runtime.cu; without, in
// without_cuda.cpp, where device_count() is 0 and the rest throws a
// RuntimeError saying pycomm was built without CUDA.
#pragma once

#include <string>
#include <vector>

namespace pycomm {
namespace cuda {

// Whether the CUDA kernels were compiled into this build.
bool built();

// The GPU architectures with compiled code in this build ("sm_80", ...).
std::vector<std::string> archs();

// GPUs visible to this process; 0, not an error, when there is no driver or
// no device (so `import pycomm` and CPU work never need one).
int device_count();

// Why device_count() is 0, in words ("" when it is not).
std::string no_device_reason();

// The name of device `index` (CommError when it does not exist).
std::string device_name(int index);

// CUDA runtime pycomm was built with and the driver's CUDA version, both as
// 1000 * major + 10 * minor; the driver's is 0 when there is none.
int runtime_version();
int driver_version();

// Throws a CommError naming the CUDA device situation unless a GPU is there:
// the kernels' entry points call it first, so a machine without one gets a
// clear message instead of a launch failure.
void require_device();

// Makes this thread's current device the one that owns `stream` (or, for the
// legacy default stream 0, the one that holds `ptr`). pycomm links the CUDA
// runtime statically: its current device is its own, not torch's or cupy's,
// so a launch on another library's stream must first follow that stream.
void use_device_of(void* stream, const void* ptr);

// Throws CommError "CUDA error in <what>: <description> (<name>)" when `code`
// (a cudaError_t) is not cudaSuccess.
void check(int code, const char* what);

}  // namespace cuda
}  // namespace pycomm
