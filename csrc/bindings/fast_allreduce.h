// Communicator.allreduce's fast path (fast_call.h): numpy buffers and
// pycomm.Memory, blocking, an op by name or code, a deadline in seconds.
#pragma once

#include <pybind11/pybind11.h>

#include <functional>

namespace pycomm {

// Runs allreduce(x, out or None, op code) with a deadline (seconds).
using FastAllreduceRun = std::function<void(pybind11::handle x, pybind11::handle out, int op, double timeout)>;

pybind11::object make_fast_allreduce(pybind11::object native, pybind11::object general, pybind11::object owner,
                                     double timeout, FastAllreduceRun run);

}  // namespace pycomm
