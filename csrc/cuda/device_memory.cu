// device_memory.h with the CUDA runtime.
#include <cuda.h>  // types and attribute names only: the driver is reached through the runtime
#include <cuda_runtime.h>

#include <chrono>
#include <cstring>
#include <thread>

#include "common/error.h"
#include "cuda/device_memory.h"
#include "cuda/runtime.h"

namespace pycomm {
namespace cuda {

namespace {

// pycomm links the runtime statically: its current device is its own, so
// every call names the device it means.
void set_device(int device) { check(cudaSetDevice(device), "cudaSetDevice"); }

// cuPointerGetAttributes, from the driver through the runtime (pycomm does
// not link libcuda: the static runtime loads it when first used).
using PointerAttributesFn = CUresult (*)(unsigned int, CUpointer_attribute*, void**, CUdeviceptr);

PointerAttributesFn pointer_attributes() {
  static PointerAttributesFn fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult found;
    if (cudaGetDriverEntryPointByVersion("cuPointerGetAttributes", &f, 12000, cudaEnableDefault,
                                         &found) != cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      cudaGetLastError();
      return static_cast<PointerAttributesFn>(nullptr);
    }
    return reinterpret_cast<PointerAttributesFn>(f);
  }();
  return fn;
}

// cudaIpcMemHandle_t and cudaIpcEventHandle_t travel as 64 opaque bytes.
template <class H> IpcHandle pack(const H& h) {
  static_assert(sizeof(H) == sizeof(IpcHandle), "IPC handle size");
  IpcHandle out;
  std::memcpy(out.bytes, &h, sizeof(h));
  return out;
}
template <class H> H unpack(const IpcHandle& handle) {
  H h;
  std::memcpy(&h, handle.bytes, sizeof(h));
  return h;
}

}  // namespace

Allocation allocation_of(const void* ptr) {
  PointerAttributesFn fn = pointer_attributes();
  if (!fn) throw_error(ErrorKind::kComm, "cuPointerGetAttributes is not available from the CUDA driver");
  CUpointer_attribute names[] = {CU_POINTER_ATTRIBUTE_RANGE_START_ADDR, CU_POINTER_ATTRIBUTE_RANGE_SIZE,
                                 CU_POINTER_ATTRIBUTE_BUFFER_ID};
  CUdeviceptr start = 0;
  size_t size = 0;
  unsigned long long id = 0;
  void* values[] = {&start, &size, &id};
  CUresult r = fn(3, names, values, reinterpret_cast<CUdeviceptr>(ptr));
  if (r != CUDA_SUCCESS)
    throw_error(ErrorKind::kComm, strprintf("cuPointerGetAttributes failed (CUresult %d) for %p", int(r), ptr));
  Allocation a;
  a.base = reinterpret_cast<uint8_t*>(start);
  a.size = size;
  a.id = id;
  return a;
}

int device_of(const void* ptr) {
  cudaPointerAttributes attr;
  cudaError_t err = cudaPointerGetAttributes(&attr, ptr);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return -1;
  }
  return attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged ? attr.device : -1;
}

void* device_alloc(size_t bytes, int device) {
  set_device(device);
  void* p = nullptr;
  check(cudaMalloc(&p, bytes ? bytes : 1), "cudaMalloc");
  return p;
}

void device_free(void* ptr) {
  if (ptr) cudaFree(ptr);  // at teardown: nothing left to report to
}

void* host_alloc_pinned(size_t bytes) {
  void* p = nullptr;
  check(cudaHostAlloc(&p, bytes ? bytes : 1, cudaHostAllocPortable), "cudaHostAlloc");
  return p;
}

void host_free_pinned(void* ptr) {
  if (ptr) cudaFreeHost(ptr);
}

IpcHandle ipc_handle(void* base) {
  cudaIpcMemHandle_t h;
  check(cudaIpcGetMemHandle(&h, base), "cudaIpcGetMemHandle");
  return pack(h);
}

void* ipc_open(const IpcHandle& handle, int device) {
  set_device(device);
  void* p = nullptr;
  check(cudaIpcOpenMemHandle(&p, unpack<cudaIpcMemHandle_t>(handle), cudaIpcMemLazyEnablePeerAccess),
        "cudaIpcOpenMemHandle");
  return p;
}

void ipc_close(void* ptr) {
  if (ptr) cudaIpcCloseMemHandle(ptr);
}

void* stream_create(int device) {
  set_device(device);
  cudaStream_t s;
  check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
  return s;
}

void stream_destroy(void* stream) {
  if (stream) cudaStreamDestroy(static_cast<cudaStream_t>(stream));
}

void stream_wait(void* waiter, void* signaler) {
  if (waiter == signaler) return;
  cudaEvent_t ev;
  check(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming), "cudaEventCreateWithFlags");
  cudaError_t err = cudaEventRecord(ev, static_cast<cudaStream_t>(signaler));
  if (err == cudaSuccess) err = cudaStreamWaitEvent(static_cast<cudaStream_t>(waiter), ev, 0);
  cudaEventDestroy(ev);  // released once the wait is satisfied
  check(err, "cudaEventRecord / cudaStreamWaitEvent");
}

void stream_sync(void* stream) {
  check(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)), "cudaStreamSynchronize");
}

bool stream_drain(void* stream, double seconds) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  for (;;) {
    const cudaError_t err = cudaStreamQuery(static_cast<cudaStream_t>(stream));
    if (err != cudaErrorNotReady) {
      cudaGetLastError();
      return true;  // drained, or failed: either way nothing more will run
    }
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
}

void copy_async(void* dst, const void* src, size_t bytes, void* stream) {
  if (bytes == 0) return;
  check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, static_cast<cudaStream_t>(stream)),
        "cudaMemcpyAsync");
}

void zero_async(void* dst, size_t bytes, void* stream) {
  if (bytes == 0) return;
  check(cudaMemsetAsync(dst, 0, bytes, static_cast<cudaStream_t>(stream)), "cudaMemsetAsync");
}

void* event_create_ipc(int device) {
  set_device(device);
  cudaEvent_t ev;
  check(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming | cudaEventInterprocess),
        "cudaEventCreateWithFlags(interprocess)");
  return ev;
}

void event_destroy(void* event) {
  if (event) cudaEventDestroy(static_cast<cudaEvent_t>(event));
}

IpcHandle event_handle(void* event) {
  cudaIpcEventHandle_t h;
  check(cudaIpcGetEventHandle(&h, static_cast<cudaEvent_t>(event)), "cudaIpcGetEventHandle");
  return pack(h);
}

void* event_open(const IpcHandle& handle, int device) {
  set_device(device);
  cudaEvent_t ev;
  check(cudaIpcOpenEventHandle(&ev, unpack<cudaIpcEventHandle_t>(handle)), "cudaIpcOpenEventHandle");
  return ev;
}

void event_record(void* event, void* stream) {
  check(cudaEventRecord(static_cast<cudaEvent_t>(event), static_cast<cudaStream_t>(stream)),
        "cudaEventRecord");
}

void stream_wait_event(void* stream, void* event) {
  check(cudaStreamWaitEvent(static_cast<cudaStream_t>(stream), static_cast<cudaEvent_t>(event), 0),
        "cudaStreamWaitEvent");
}

}  // namespace cuda
}  // namespace pycomm
