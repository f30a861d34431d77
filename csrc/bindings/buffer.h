// Host memory handed in from Python: numpy arrays, pycomm.Memory (memory.h),
// anything else with the buffer protocol, or with __dlpack__ (CPU torch tensors, without pycomm
// importing torch). The view keeps the exporter alive and its export held
// until the op using it is done.
#pragma once

#include <pybind11/pybind11.h>

#include <memory>

#include "../common/dtype.h"

namespace pycomm {

class HostBuffer {
 public:
  // Raises TypeError (unsupported object or dtype) or ValueError (not
  // contiguous, read-only where `writable`, not on the CPU). `what` names the
  // argument in messages.
  HostBuffer(pybind11::handle obj, const char* what, bool writable);
  ~HostBuffer();
  HostBuffer(const HostBuffer&) = delete;
  HostBuffer& operator=(const HostBuffer&) = delete;

  void* data() const { return data_; }
  size_t count() const { return count_; }
  DType dtype() const { return dtype_; }
  size_t nbytes() const { return count_ * dtype_size(dtype_); }

 private:
  void* data_ = nullptr;
  size_t count_ = 0;
  DType dtype_ = DType::kUInt8;
  bool has_view_ = false;
  Py_buffer view_{};
  pybind11::object capsule_;  // DLPack: alive until we are done
  pybind11::object array_;    // numpy or Memory, read directly: alive until we are done
  bool from_numpy(pybind11::handle obj, bool writable);
};

}  // namespace pycomm
