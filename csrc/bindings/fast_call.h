// A Communicator method with a native fast path: a C function bound to one
// Python Communicator (set as that instance's attribute over the class's
// method), called with vectorcall arguments, so that a small op pays neither
// a Python frame nor pybind11's dispatcher. Its arguments are sorted by
// name here; the op's own rules (fast_allreduce.cpp, fast_p2p.cpp) then
// take the call or decline it, and a declined call, every call with
// arguments the rules do not know, and every call while TRACE logging is on
// go to the Python method with the same arguments. The rules accept only
// what the native entry checks itself, so both paths raise alike.
#pragma once

#include <pybind11/pybind11.h>

#include <functional>
#include <vector>

namespace pycomm {

// A call's arguments by parameter (nullptr: not given), and the
// Communicator's default deadline in seconds.
struct FastArgs {
  PyObject* const* arg;
  PyObject* owner;  // the Python Communicator (borrowed, alive through the call)
  double default_timeout;
};

// Runs the call and returns its result (a new reference), or nullptr to
// decline it (no Python error set). C++ exceptions become Python errors.
using FastRule = std::function<PyObject*(const FastArgs& a)>;

// params: the method's parameter names, positional ones first (`positional`
// of them). native: kept alive (it owns what `rule` uses); general: the
// Python method, called as general(owner, *args, **kwargs); owner: a
// weakref to the Python Communicator.
pybind11::object make_fast_method(const char* name, const char* doc, std::vector<const char*> params,
                                  int positional, pybind11::object native, pybind11::object general,
                                  pybind11::object owner, double timeout, FastRule rule);

// Helpers for the rules.
namespace fast {
bool is_host_array(PyObject* o);  // a numpy array or a pycomm.Memory (HostBuffer reads both directly)
bool is_int(PyObject* o);         // an int, not a bool
double positive_seconds(PyObject* t);  // an int or float > 0, else 0
}  // namespace fast

// On while TRACE logging is (pycomm/log.py): every call then takes the Python path.
void set_trace_calls(bool on);

}  // namespace pycomm
