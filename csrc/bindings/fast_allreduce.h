// Communicator.allreduce's fast path: a C function bound to one Python
// Communicator (it is that instance's `allreduce` attribute), called with
// vectorcall arguments, so that a small op pays neither a Python frame nor
// pybind11's dispatcher. It takes numpy buffers and pycomm.Memory, blocking, with an op by
// name or code and a deadline in seconds; every other call, and every call while
// TRACE logging is on, goes to the Python method, which takes the same
// arguments. The checks are the native entry's, so both paths raise alike.
#pragma once

#include <pybind11/pybind11.h>

#include <functional>

namespace pycomm {

// Runs allreduce(x, out or None, op code) with a deadline (seconds).
using FastAllreduceRun = std::function<void(pybind11::handle x, pybind11::handle out, int op, double timeout)>;

// native: kept alive (it owns what `run` uses); general: the Python method,
// called as general(owner, *args, **kwargs) when the fast path does not
// apply; owner: a weakref to the Python Communicator.
// timeout: the default deadline.
pybind11::object make_fast_allreduce(pybind11::object native, pybind11::object general, pybind11::object owner,
                                     double timeout, FastAllreduceRun run);

// On while TRACE logging is (pycomm/log.py): every call then takes the Python path.
void set_trace_calls(bool on);

}  // namespace pycomm
