// pycomm._C.Work: an op as Python holds it. It keeps what the op reads and
// writes (exported Python buffers, counts, a GPU buffer's staging) until the
// op is done, and drives the point-to-point engine while Python waits on a
// send or receive.
#pragma once

#include <pybind11/pybind11.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <vector>

#include "../comm/work.h"
#include "../p2p/p2p_engine.h"
#include "buffer.h"
#include "device_staging.h"

namespace pycomm {

// What an op reads besides its buffers (the uneven forms' counts), owned
// until it is done.
struct Held {
  std::vector<uint64_t> counts, recv_counts;
};

// Two threads may wait on one Work at once (a caller and the torch group's
// completion thread): finish() runs its effects once, and what it drops goes
// with the GIL held, outside any state another thread can see.
struct PyWork {
  std::shared_ptr<Work> work;
  std::vector<std::unique_ptr<HostBuffer>> buffers;
  std::shared_ptr<Held> held;
  // A send or receive: waiting drives the engine (nobody else may).
  std::shared_ptr<P2PEngine> engine;
  std::shared_ptr<P2POp> op;
  size_t elem = 1;
  std::unique_ptr<DeviceStaging> staging;  // a GPU buffer's send or receive ...
  pybind11::object device_buffer;          // ... and what keeps its memory alive
  bool staged = false;                     // set with staging, before the Work is shared
  std::mutex finish_mu;
  std::atomic<bool> finished{false};

  // Once the op is done (call with the GIL): a GPU receive's bytes into the
  // device buffer, then the buffers are let go. A second caller returns
  // after the first delivered.
  void finish();
  bool wait(pybind11::object timeout);
  pybind11::object exception();
  bool is_completed();  // a send or receive: one pass of progress first, as MPI_Test
  // A receive's source rank and element count (None before it completes,
  // and for other ops).
  pybind11::object source();
  pybind11::object count();
};

void bind_work(pybind11::module_& m);

}  // namespace pycomm
