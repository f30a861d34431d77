#include "fast_p2p.h"

#include <climits>

#include "fast_call.h"

namespace py = pybind11;

namespace pycomm {
namespace {

// An int that fits 32 bits into *v; false for anything else (the Python
// method words the error).
bool int32_of(PyObject* o, int* v) {
  if (!fast::is_int(o)) return false;
  int overflow = 0;
  const long long x = PyLong_AsLongLongAndOverflow(o, &overflow);
  if (overflow || x < INT_MIN || x > INT_MAX) return false;
  *v = static_cast<int>(x);
  return true;
}

}  // namespace

py::object make_fast_p2p(bool send, py::object native, py::object general, py::object owner, double timeout,
                         FastP2PRun run) {
  auto rule = [send, run = std::move(run)](const FastArgs& f) -> PyObject* {
    PyObject *x = f.arg[0], *peer_arg = f.arg[1];
    if (x == nullptr || !fast::is_host_array(x)) return nullptr;
    int peer = -1, tag = 0;  // recv's src None: any source
    if (send ? peer_arg == nullptr || !int32_of(peer_arg, &peer)
             : peer_arg != nullptr && peer_arg != Py_None && !int32_of(peer_arg, &peer))
      return nullptr;
    if (f.arg[2] != nullptr && !int32_of(f.arg[2], &tag)) return nullptr;
    if (f.arg[3] != nullptr && f.arg[3] != Py_False) return nullptr;  // async: the Python method
    double t = f.default_timeout;
    if (f.arg[4] != nullptr && f.arg[4] != Py_None && (t = fast::positive_seconds(f.arg[4])) == 0) return nullptr;
    bool allow_shorter = false;
    if (!send && f.arg[5] != nullptr) {
      if (f.arg[5] != Py_True && f.arg[5] != Py_False) return nullptr;
      allow_shorter = f.arg[5] == Py_True;
    }
    // Inside `with comm.group()` the op joins the group: the Python method.
    PyObject* group = PyObject_GetAttrString(f.owner, "_group");
    if (group == nullptr) {
      PyErr_Clear();
      return nullptr;
    }
    Py_DECREF(group);
    if (group != Py_None) return nullptr;
    return run(send, x, peer, tag, allow_shorter, t).release().ptr();
  };
  if (send)
    return make_fast_method("send",
                            "send(x, dst, tag=0, async_op=False, timeout=None)\n\nCommunicator.send (see its "
                            "documentation), with numpy buffers and pycomm.Memory taking a native fast path.",
                            {"x", "dst", "tag", "async_op", "timeout"}, 5, std::move(native), std::move(general),
                            std::move(owner), timeout, std::move(rule));
  return make_fast_method("recv",
                          "recv(x, src=None, tag=0, async_op=False, timeout=None, *, allow_shorter=False)\n\n"
                          "Communicator.recv (see its documentation), with numpy buffers and pycomm.Memory taking a "
                          "native fast path.",
                          {"x", "src", "tag", "async_op", "timeout", "allow_shorter"}, 5, std::move(native),
                          std::move(general), std::move(owner), timeout, std::move(rule));
}

}  // namespace pycomm
