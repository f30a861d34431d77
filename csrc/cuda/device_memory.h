// Device memory, streams and CUDA IPC as the collectives see them: plain C++
// (no CUDA headers), defined in device_memory.cu with CUDA and in
// device_memory_stub.cpp without (where every call says pycomm has no CUDA).
// Errors throw CommError naming the CUDA call.
#pragma once

#include <cstddef>
#include <cstdint>

namespace pycomm {
namespace cuda {

// The device holding `ptr`, or -1 for host memory (pageable or pinned).
int device_of(const void* ptr);

// The cudaMalloc allocation holding a device pointer: where it starts, how
// long it is, and the process-wide unique id CUDA gives it (a freed and
// reallocated range gets a new id, so the id keys caches of IPC handles).
struct Allocation {
  uint8_t* base = nullptr;
  size_t size = 0;
  uint64_t id = 0;
};
Allocation allocation_of(const void* ptr);

// Device memory another process on this host can map (cudaMalloc'd: IPC
// handles exist only for whole cudaMalloc allocations).
void* device_alloc(size_t bytes, int device);
void device_free(void* ptr);

// Page-locked host memory: staging for GPU data crossing hosts.
void* host_alloc_pinned(size_t bytes);
void host_free_pinned(void* ptr);

struct IpcHandle {
  uint8_t bytes[64];  // cudaIpcMemHandle_t, sent to peers as is
};
// The handle of a whole allocation (its base, as allocation_of gives it):
// what torch's caching allocator hands out are parts of such allocations.
IpcHandle ipc_handle(void* base);
// Maps a peer's allocation into this process (on `device`); ipc_close undoes it.
void* ipc_open(const IpcHandle& handle, int device);
void ipc_close(void* ptr);

// A stream of pycomm's own on `device` (non-blocking: it does not serialise
// with the legacy default stream).
void* stream_create(int device);
void stream_destroy(void* stream);
// Work later queued on `waiter` runs after all work queued so far on
// `signaler` (an event between them; the streams may belong to other libraries).
void stream_wait(void* waiter, void* signaler);
void stream_sync(void* stream);
// Waits up to `seconds` for `stream` to drain; false if it has not (a peer's
// event that never fires: teardown then leaks rather than hangs).
bool stream_drain(void* stream, double seconds);
// Any direction (device, pinned or pageable host), ordered on `stream`.
void copy_async(void* dst, const void* src, size_t bytes, void* stream);
void zero_async(void* dst, size_t bytes, void* stream);  // device memory, ordered on `stream`

// Events peers on this host can wait on: how ranks order their streams after
// each other's on the GPU, with no host waiting for the GPU. The recorder
// sends the handle after event_record; the peer opens it (once) and queues
// stream_wait_event, which waits for that record (CUDA waits for the most
// recent record made before the wait is queued).
void* event_create_ipc(int device);
void event_destroy(void* event);
IpcHandle event_handle(void* event);
void* event_open(const IpcHandle& handle, int device);  // a peer's; event_destroy closes it
void event_record(void* event, void* stream);
void stream_wait_event(void* stream, void* event);

}  // namespace cuda
}  // namespace pycomm
