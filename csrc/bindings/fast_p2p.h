// Communicator.send and .recv's fast paths (fast_call.h): numpy buffers and
// pycomm.Memory, blocking, an int peer (recv: or None, any source), an int
// tag of 32 bits, a deadline in seconds, outside a `comm.group()` block.
#pragma once

#include <pybind11/pybind11.h>

#include <functional>

namespace pycomm {

// Runs a blocking send or receive: returns None (send) or the source rank.
using FastP2PRun = std::function<pybind11::object(bool send, pybind11::handle x, int peer, int tag,
                                                  bool allow_shorter, double timeout)>;

// send=true: Communicator.send's; false: .recv's.
pybind11::object make_fast_p2p(bool send, pybind11::object native, pybind11::object general, pybind11::object owner,
                               double timeout, FastP2PRun run);

}  // namespace pycomm
