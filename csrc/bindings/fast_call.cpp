#include "fast_call.h"

#include <pybind11/numpy.h>

#include <atomic>
#include <string>

#include "errors.h"
#include "memory.h"

namespace py = pybind11;

namespace pycomm {
namespace {

constexpr const char* kCapsule = "pycomm.fast_method";
constexpr int kMaxParams = 8;
std::atomic<bool> g_trace_calls{false};

struct State {
  py::object native, general, owner;
  double timeout;
  std::vector<const char*> params;
  int positional;
  FastRule rule;
  PyMethodDef def;
  std::string name, doc;
};

// The Python Communicator behind the weakref, as a new reference; nullptr
// with ReferenceError set when it is gone.
PyObject* owner_of(const State& st) {
  PyObject* owner = nullptr;
#if PY_VERSION_HEX >= 0x030D0000
  if (PyWeakref_GetRef(st.owner.ptr(), &owner) < 0) return nullptr;
#else
  owner = PyWeakref_GetObject(st.owner.ptr());
  if (owner == nullptr) return nullptr;
  owner = owner == Py_None ? nullptr : (Py_INCREF(owner), owner);
#endif
  if (owner == nullptr)
    PyErr_Format(PyExc_ReferenceError, "the pycomm.Communicator of this %s is gone", st.name.c_str());
  return owner;
}

PyObject* call_general(const State& st, PyObject* owner, PyObject* const* args, Py_ssize_t nargs,
                       PyObject* kwnames) {
  const Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
  std::vector<PyObject*> all(1 + nargs + nkw);
  all[0] = owner;
  for (Py_ssize_t i = 0; i < nargs + nkw; ++i) all[1 + i] = args[i];
  return PyObject_Vectorcall(st.general.ptr(), all.data(), 1 + nargs, kwnames);
}

// The arguments by parameter; false for what only the Python method may
// answer (too many, an unknown or repeated name: it words the error).
bool sort_args(const State& st, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames, PyObject** a) {
  if (nargs > st.positional) return false;
  for (Py_ssize_t i = 0; i < nargs; ++i) a[i] = args[i];
  const Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
  for (Py_ssize_t k = 0; k < nkw; ++k) {
    PyObject* name = PyTuple_GET_ITEM(kwnames, k);
    size_t i = 0;
    while (i < st.params.size() && PyUnicode_CompareWithASCIIString(name, st.params[i]) != 0) ++i;
    if (i == st.params.size() || a[i] != nullptr) return false;
    a[i] = args[nargs + k];
  }
  return true;
}

PyObject* call(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  auto* st = static_cast<State*>(PyCapsule_GetPointer(self, kCapsule));
  if (st == nullptr) return nullptr;
  PyObject* owner = owner_of(*st);
  if (owner == nullptr) return nullptr;
  PyObject* a[kMaxParams] = {};
  PyObject* result = nullptr;
  bool taken = false;
  if (!g_trace_calls.load(std::memory_order_relaxed) && sort_args(*st, args, nargs, kwnames, a)) {
    try {
      result = st->rule(FastArgs{a, owner, st->timeout});
      taken = result != nullptr;
    } catch (py::error_already_set& e) {
      e.restore();
      taken = true;
    } catch (const py::builtin_exception& e) {
      e.set_error();
      taken = true;
    } catch (const CommError& e) {
      set_comm_error(e);
      taken = true;
    } catch (const std::exception& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what());
      taken = true;
    }
  }
  if (!taken) result = call_general(*st, owner, args, nargs, kwnames);
  Py_DECREF(owner);
  return result;
}

}  // namespace

namespace fast {
bool is_host_array(PyObject* o) { return py::detail::npy_api::get().PyArray_Check_(o) || memory_view(o, nullptr); }
bool is_int(PyObject* o) { return PyLong_Check(o) && !PyBool_Check(o); }
double positive_seconds(PyObject* t) {
  double v = 0;
  if (PyFloat_CheckExact(t)) v = PyFloat_AS_DOUBLE(t);
  else if (PyLong_CheckExact(t)) v = PyLong_AsDouble(t);
  if (v == -1.0 && PyErr_Occurred()) PyErr_Clear();
  return v > 0 ? v : 0;
}
}  // namespace fast

void set_trace_calls(bool on) { g_trace_calls.store(on, std::memory_order_relaxed); }

py::object make_fast_method(const char* name, const char* doc, std::vector<const char*> params, int positional,
                            py::object native, py::object general, py::object owner, double timeout,
                            FastRule rule) {
  if (params.size() > static_cast<size_t>(kMaxParams)) throw std::logic_error("make_fast_method: too many parameters");
  auto* st = new State{std::move(native), std::move(general), std::move(owner), timeout, std::move(params),
                       positional, std::move(rule), {}, name, doc};
  st->def = {st->name.c_str(), reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&call)),
             METH_FASTCALL | METH_KEYWORDS, st->doc.c_str()};
  py::capsule cap(st, kCapsule, [](PyObject* c) { delete static_cast<State*>(PyCapsule_GetPointer(c, kCapsule)); });
  PyObject* f = PyCFunction_NewEx(&st->def, cap.ptr(), nullptr);
  if (f == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(f);
}

}  // namespace pycomm
