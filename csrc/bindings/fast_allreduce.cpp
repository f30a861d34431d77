#include "fast_allreduce.h"

#include "../common/dtype.h"
#include "fast_call.h"

namespace py = pybind11;

namespace pycomm {
namespace {

// An op by name or code (an int or a pycomm.ReduceOp, not a bool); -1:
// anything else, which the Python method words the error for.
int op_code(PyObject* op) {
  if (PyUnicode_Check(op)) {
    for (int i = 0; i < kNumRedOps; ++i)
      if (PyUnicode_CompareWithASCIIString(op, redop_name(static_cast<RedOp>(i))) == 0) return i;
    return -1;
  }
  if (!fast::is_int(op)) return -1;
  const long v = PyLong_AsLong(op);
  if (v == -1 && PyErr_Occurred()) PyErr_Clear();
  return v >= 0 && v < kNumRedOps ? static_cast<int>(v) : -1;
}

}  // namespace

py::object make_fast_allreduce(py::object native, py::object general, py::object owner, double timeout,
                               FastAllreduceRun run) {
  auto rule = [run = std::move(run)](const FastArgs& f) -> PyObject* {
    PyObject *x = f.arg[0], *op = f.arg[1], *out = f.arg[2] == Py_None ? nullptr : f.arg[2];
    if (x == nullptr || !fast::is_host_array(x) || (out != nullptr && !fast::is_host_array(out))) return nullptr;
    if (f.arg[3] != nullptr && f.arg[3] != Py_False) return nullptr;  // async: the Python method
    int code = 0;  // "sum"
    if (op != nullptr && (code = op_code(op)) < 0) return nullptr;
    double t = f.default_timeout;
    if (f.arg[4] != nullptr && f.arg[4] != Py_None && (t = fast::positive_seconds(f.arg[4])) == 0) return nullptr;
    run(x, out == nullptr ? py::handle(Py_None) : py::handle(out), code, t);
    PyObject* result = out != nullptr ? out : x;
    Py_INCREF(result);
    return result;
  };
  return make_fast_method(
      "allreduce",
      "allreduce(x, op='sum', out=None, async_op=False, timeout=None, *, compress=None, block_size=64, "
      "error_feedback=None, stochastic=False, seed=None)\n\n"
      "Communicator.allreduce (see its documentation), with numpy buffers and pycomm.Memory taking a native "
      "fast path.",
      {"x", "op", "out", "async_op", "timeout"}, 5, std::move(native), std::move(general), std::move(owner), timeout,
      std::move(rule));
}

}  // namespace pycomm
