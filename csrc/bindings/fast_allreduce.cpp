#include "fast_allreduce.h"

#include <pybind11/numpy.h>

#include <atomic>
#include <vector>

#include "../common/dtype.h"
#include "errors.h"
#include "memory.h"

namespace py = pybind11;

namespace pycomm {
namespace {

constexpr const char* kCapsule = "pycomm.fast_allreduce";
std::atomic<bool> g_trace_calls{false};

struct State {
  py::object native, general, owner;
  double timeout;
  FastAllreduceRun run;
};

// Communicator.allreduce's parameters that the fast path takes, in order.
constexpr const char* kParams[] = {"x", "op", "out", "async_op", "timeout"};
constexpr int kNumParams = 5;

int param_index(PyObject* name) {
  for (int i = 0; i < kNumParams; ++i)
    if (PyUnicode_CompareWithASCIIString(name, kParams[i]) == 0) return i;
  return -1;
}

// An op by name or code (an int or a pycomm.ReduceOp, not a bool); -1:
// anything else, which the Python method words the error for.
int op_code(PyObject* op) {
  if (PyUnicode_Check(op)) {
    for (int i = 0; i < kNumRedOps; ++i)
      if (PyUnicode_CompareWithASCIIString(op, redop_name(static_cast<RedOp>(i))) == 0) return i;
    return -1;
  }
  if (!PyLong_Check(op) || PyBool_Check(op)) return -1;
  const long v = PyLong_AsLong(op);
  if (v == -1 && PyErr_Occurred()) PyErr_Clear();
  return v >= 0 && v < kNumRedOps ? static_cast<int>(v) : -1;
}

// A deadline in seconds (an int or a float, not a bool, > 0); 0: anything
// else, which the Python method words the error for.
double positive_seconds(PyObject* t) {
  double v = 0;
  if (PyFloat_CheckExact(t)) v = PyFloat_AS_DOUBLE(t);
  else if (PyLong_CheckExact(t)) v = PyLong_AsDouble(t);
  if (v == -1.0 && PyErr_Occurred()) PyErr_Clear();
  return v > 0 ? v : 0;
}

// What the fast path reads directly (HostBuffer): numpy arrays and pycomm.Memory.
bool is_array(PyObject* o) { return py::detail::npy_api::get().PyArray_Check_(o) || memory_view(o, nullptr); }

PyObject* call_general(State& st, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  PyObject* owner = nullptr;  // a strong reference: alive through the call
#if PY_VERSION_HEX >= 0x030D0000
  if (PyWeakref_GetRef(st.owner.ptr(), &owner) < 0) return nullptr;
#else
  owner = PyWeakref_GetObject(st.owner.ptr());
  if (owner == nullptr) return nullptr;
  owner = owner == Py_None ? nullptr : (Py_INCREF(owner), owner);
#endif
  if (owner == nullptr) {
    PyErr_SetString(PyExc_ReferenceError, "the pycomm.Communicator of this allreduce is gone");
    return nullptr;
  }
  const Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
  std::vector<PyObject*> all(1 + nargs + nkw);
  all[0] = owner;
  for (Py_ssize_t i = 0; i < nargs + nkw; ++i) all[1 + i] = args[i];
  PyObject* result = PyObject_Vectorcall(st.general.ptr(), all.data(), 1 + nargs, kwnames);
  Py_DECREF(owner);
  return result;
}

PyObject* call(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  auto* st = static_cast<State*>(PyCapsule_GetPointer(self, kCapsule));
  if (st == nullptr) return nullptr;
  PyObject* a[kNumParams] = {};
  bool fast = nargs <= kNumParams && !g_trace_calls.load(std::memory_order_relaxed);
  for (Py_ssize_t i = 0; fast && i < nargs; ++i) a[i] = args[i];
  const Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
  for (Py_ssize_t k = 0; fast && k < nkw; ++k) {
    const int i = param_index(PyTuple_GET_ITEM(kwnames, k));
    if (i < 0 || a[i] != nullptr) fast = false;  // compress= & co., or a duplicate (Python words it)
    else a[i] = args[nargs + k];
  }
  PyObject *x = a[0], *op = a[1], *out = a[2] == Py_None ? nullptr : a[2];
  int code = 0;  // "sum"
  double timeout = st->timeout;
  if (fast) {
    fast = x != nullptr && is_array(x) && (out == nullptr || is_array(out)) && (a[3] == nullptr || a[3] == Py_False);
    if (fast && op != nullptr) fast = (code = op_code(op)) >= 0;
    if (fast && a[4] != nullptr && a[4] != Py_None) fast = (timeout = positive_seconds(a[4])) > 0;
  }
  if (!fast) return call_general(*st, args, nargs, kwnames);
  try {
    st->run(x, out == nullptr ? py::handle(Py_None) : py::handle(out), code, timeout);
  } catch (py::error_already_set& e) {
    e.restore();
    return nullptr;
  } catch (const py::builtin_exception& e) {
    e.set_error();
    return nullptr;
  } catch (const CommError& e) {
    set_comm_error(e);
    return nullptr;
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
    return nullptr;
  }
  PyObject* result = out != nullptr ? out : x;
  Py_INCREF(result);
  return result;
}

PyMethodDef kDef = {
    "allreduce", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&call)),
    METH_FASTCALL | METH_KEYWORDS,
    "allreduce(x, op='sum', out=None, async_op=False, timeout=None, *, compress=None, block_size=64, "
    "error_feedback=None, stochastic=False, seed=None)\n\n"
    "Communicator.allreduce (see its documentation), with numpy buffers and pycomm.Memory taking a native fast path."};

}  // namespace

void set_trace_calls(bool on) { g_trace_calls.store(on, std::memory_order_relaxed); }

py::object make_fast_allreduce(py::object native, py::object general, py::object owner, double timeout,
                               FastAllreduceRun run) {
  auto* st = new State{std::move(native), std::move(general), std::move(owner), timeout, std::move(run)};
  py::capsule cap(st, kCapsule, [](PyObject* c) {
    delete static_cast<State*>(PyCapsule_GetPointer(c, kCapsule));
  });
  PyObject* f = PyCFunction_NewEx(&kDef, cap.ptr(), nullptr);
  if (f == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(f);
}

}  // namespace pycomm
