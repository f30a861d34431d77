// Collectives on GPU buffers (device.cpp).
//
// Ranks on one host work on each other's buffers directly: at the start of
// an op every rank sends its peers the CUDA IPC handles of the allocations
// holding its input and output (with the offsets), each peer maps them once
// (cached by handle), and kernels and copies read and write peer memory in
// place. An allreduce is two-shot: rank r reduces slice r of every rank's
// input in rank order into its output and copies it into every peer's
// output; reduce-scatter, allgather and broadcast pull what they need. Two
// meetings per op over the host transport (the handle exchange, stamped so
// mismatched calls are caught, and an end-of-op barrier), no staging copy,
// no byte through host memory. Ranks on several hosts stage through pinned
// host memory and run the host algorithms.
//
// Ops run on a stream of pycomm's own, ordered after the caller's stream,
// and are complete (synchronised) when they return.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <unordered_map>

#include "collectives.h"
#include "exchange.h"
#include "../cuda/device_memory.h"

namespace pycomm {

class DeviceState {
 public:
  // single_host: every rank shares this host (CUDA IPC); else host staging.
  explicit DeviceState(bool single_host) : single_host_(single_host) {}
  ~DeviceState();
  DeviceState(const DeviceState&) = delete;
  DeviceState& operator=(const DeviceState&) = delete;

  // in/out/count/root as for the host collectives (collectives.h).
  void run(OpContext& ctx, const void* in, void* out, size_t count, int root, void* caller_stream);
  // The compressed allreduce (ctx.stamp.coll kAllreduceInt8; one host only):
  // the two-shot of compressed.cpp with the CUDA kernels, every rank's int8
  // bytes read in place by their owners; residuals (a.*_residual) in GPU memory.
  void run_int8(OpContext& ctx, const void* in, float* out, size_t count, const Int8Args& a,
                void* caller_stream);
  // "CUDA IPC on device 0 (3 peer allocations mapped)", for logs and repr.
  std::string describe() const;

  // A buffer as a peer finds it: its allocation's IPC handle and the offset.
  struct Ref {
    cuda::IpcHandle handle;
    uint64_t offset;
    uint64_t bytes;
  };

 private:
  Ref export_ref(const void* ptr, size_t bytes);
  uint8_t* import_ref(const Ref& ref);
  void run_ipc(OpContext& ctx, const uint8_t* in, uint8_t* out, size_t count, int root);
  void run_staged(OpContext& ctx, const uint8_t* in, uint8_t* out, size_t count, int root);
  void start(OpContext& ctx, const void* buffer, void* caller_stream);
  uint8_t* scratch(size_t bytes);  // device memory of our own, IPC-exportable

  const bool single_host_;
  int device_ = -1;
  void* stream_ = nullptr;
  std::unordered_map<uint64_t, cuda::IpcHandle> exported_;  // allocation id -> its handle
  std::map<std::string, uint8_t*> imported_;                // peer handle -> mapped base
  uint8_t* pinned_ = nullptr;  // host staging, several hosts
  size_t pinned_bytes_ = 0;
  uint8_t* scratch_ = nullptr;  // int8 collectives: this rank's quantized input and owned sums
  size_t scratch_bytes_ = 0;
};

}  // namespace pycomm
