// A GPU buffer's point-to-point through pinned host memory: a send copies
// the buffer out (after the work already queued on the caller's stream) before
// it is posted; a receive lands in host memory and is copied in, on the
// caller's stream, once it completed. Both copies are waited for, so the host
// buffer can go as soon as the op is done. (Point-to-point has no GPU-direct
// path: the p2p engine moves host bytes.)
#pragma once

#include <cstddef>
#include <cstdint>

namespace pycomm {

class DeviceStaging {
 public:
  // dev: `bytes` of device memory; stream: the caller's (0: legacy default).
  DeviceStaging(void* dev, size_t bytes, void* stream, bool send);
  ~DeviceStaging();
  DeviceStaging(const DeviceStaging&) = delete;
  DeviceStaging& operator=(const DeviceStaging&) = delete;

  uint8_t* host() const { return host_; }
  // A receive that completed with `received` bytes: into the device buffer
  // (once; a send has nothing to deliver).
  void deliver(size_t received);

 private:
  void* dev_;
  size_t bytes_;
  void* stream_;
  bool send_;
  bool delivered_ = false;
  uint8_t* host_ = nullptr;
};

}  // namespace pycomm
