// device_memory.h for a build without CUDA: no pointer is a device pointer,
// and anything that needs a device says pycomm was built without CUDA.
#ifndef PYCOMM_WITH_CUDA

#include <stdexcept>

#include "cuda/device_memory.h"

namespace pycomm {
namespace cuda {

namespace {
[[noreturn]] void not_built() {
  throw std::runtime_error("pycomm was built without CUDA: GPU buffers need a build with a CUDA "
                           "toolkit (PYCOMM_CUDA=1 pip install -e .)");
}
}  // namespace

Allocation allocation_of(const void*) { not_built(); }
int device_of(const void*) { return -1; }
void* device_alloc(size_t, int) { not_built(); }
void device_free(void*) {}
void* host_alloc_pinned(size_t) { not_built(); }
void host_free_pinned(void*) {}
IpcHandle ipc_handle(void*) { not_built(); }
void* ipc_open(const IpcHandle&, int) { not_built(); }
void ipc_close(void*) {}
void* stream_create(int) { not_built(); }
void stream_destroy(void*) {}
void stream_wait(void*, void*) { not_built(); }
void stream_sync(void*) { not_built(); }
bool stream_drain(void*, double) { return true; }
void copy_async(void*, const void*, size_t, void*) { not_built(); }
void zero_async(void*, size_t, void*) { not_built(); }
void* event_create_ipc(int) { not_built(); }
void event_destroy(void*) {}
IpcHandle event_handle(void*) { not_built(); }
void* event_open(const IpcHandle&, int) { not_built(); }
void event_record(void*, void*) { not_built(); }
void stream_wait_event(void*, void*) { not_built(); }

}  // namespace cuda
}  // namespace pycomm

#endif  // PYCOMM_WITH_CUDA
