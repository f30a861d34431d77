// Collectives on GPU buffers (device.cpp).
//
// Ranks on one host: each rank owns a staging buffer in device memory that
// every other rank maps through CUDA IPC once; an op copies this rank's data
// into its staging, the ranks meet (a stamped zero-byte exchange over the
// host transport, which also catches mismatched calls), and kernels read the
// peers' staging directly: each rank reduces its slice from every rank's
// staging in rank order (the two-shot allreduce), then copies every slice
// out. No byte passes through host memory. Ranks on several hosts stage
// through pinned host memory and run the host algorithms.
//
// Ops run on a stream of pycomm's own, ordered after the caller's stream,
// and are complete (synchronised) when they return.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "exchange.h"

namespace pycomm {

class DeviceState {
 public:
  // single_host: every rank shares this host (CUDA IPC); else host staging.
  DeviceState(bool single_host, size_t staging_bytes)
      : single_host_(single_host), staging_bytes_(staging_bytes) {}
  ~DeviceState();
  DeviceState(const DeviceState&) = delete;
  DeviceState& operator=(const DeviceState&) = delete;

  // in/out/count/root as for the host collectives (collectives.h).
  void run(OpContext& ctx, const void* in, void* out, size_t count, int root, void* caller_stream);
  // "CUDA IPC between 4 local ranks on device 0" (for logs and repr).
  std::string describe() const;

 private:
  void setup(OpContext& ctx, int device);
  void run_ipc(OpContext& ctx, const uint8_t* in, uint8_t* out, size_t count, int root);
  void run_staged(OpContext& ctx, const uint8_t* in, uint8_t* out, size_t count, int root);

  const bool single_host_;
  const size_t staging_bytes_;  // per rank: an input region and an output region
  int device_ = -1;
  void* stream_ = nullptr;
  uint8_t* staging_ = nullptr;        // this rank's (device memory)
  std::vector<uint8_t*> peer_staging_;  // every rank's, mapped here (own included)
  uint8_t* pinned_ = nullptr;          // host staging, several hosts
  size_t pinned_bytes_ = 0;
};

}  // namespace pycomm
