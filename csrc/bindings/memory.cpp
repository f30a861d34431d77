#include "memory.h"

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace py = pybind11;

namespace pycomm {
namespace {

struct MemoryObject {
  PyObject_HEAD
  MemoryView view;
  Py_ssize_t shape, stride;  // what a buffer export points at
  PyObject* keep;            // held while the Memory lives, or nullptr
};

PyTypeObject g_type = {};  // filled in by bind_memory

constexpr const char* kParams[] = {"address", "count", "dtype", "readonly", "keep"};
constexpr int kNumParams = 5;

// The buffer protocol's format of each dtype (dtype.h order); bfloat16 has none.
const char* buffer_format(DType t) {
  switch (t) {
    case DType::kFloat32: return "f";
    case DType::kFloat64: return "d";
    case DType::kFloat16: return "e";
    case DType::kInt8: return "b";
    case DType::kUInt8: return "B";
    case DType::kInt32: return "i";
    case DType::kInt64: return "q";
    case DType::kBFloat16: return nullptr;
  }
  return nullptr;
}

PyObject* fail(PyObject* kind, const std::string& what) {
  PyErr_SetString(kind, ("pycomm.Memory: " + what).c_str());
  return nullptr;
}

bool is_int(PyObject* o) { return PyLong_Check(o) && !PyBool_Check(o); }

PyObject* make(PyTypeObject* type, PyObject* const* args, size_t nargsf, PyObject* kwnames) {
  const Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
  PyObject* a[kNumParams] = {};
  if (nargs > kNumParams) return fail(PyExc_TypeError, "takes at most 5 arguments");
  for (Py_ssize_t i = 0; i < nargs; ++i) a[i] = args[i];
  const Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
  for (Py_ssize_t k = 0; k < nkw; ++k) {
    PyObject* name = PyTuple_GET_ITEM(kwnames, k);
    int i = 0;
    while (i < kNumParams && PyUnicode_CompareWithASCIIString(name, kParams[i]) != 0) ++i;
    if (i == kNumParams) return fail(PyExc_TypeError, "unexpected keyword argument " + std::string(PyUnicode_AsUTF8(name)));
    if (a[i] != nullptr) return fail(PyExc_TypeError, std::string("got two values for ") + kParams[i]);
    a[i] = args[nargs + k];
  }
  for (int i = 0; i < 3; ++i)
    if (a[i] == nullptr) return fail(PyExc_TypeError, std::string("missing argument ") + kParams[i]);
  if (!is_int(a[0]) || !is_int(a[1])) return fail(PyExc_TypeError, "address and count must be ints");
  const unsigned long long address = PyLong_AsUnsignedLongLong(a[0]);
  if (PyErr_Occurred() || address > UINTPTR_MAX) {
    PyErr_Clear();
    return fail(PyExc_ValueError, "address must be a non-negative int that fits a pointer");
  }
  const Py_ssize_t count = PyLong_AsSsize_t(a[1]);
  if (count < 0) {
    PyErr_Clear();
    return fail(PyExc_ValueError, "count must be a non-negative int");
  }
  if (!PyUnicode_Check(a[2])) return fail(PyExc_TypeError, "dtype must be a name such as 'float32'");
  int dtype = 0;
  while (dtype < kNumDTypes && PyUnicode_CompareWithASCIIString(a[2], dtype_name(static_cast<DType>(dtype))) != 0)
    ++dtype;
  if (dtype == kNumDTypes)
    return fail(PyExc_ValueError, "unknown dtype '" + std::string(PyUnicode_AsUTF8(a[2])) +
                                      "'; pycomm has float32, float64, float16, bfloat16, int8, uint8, int32, int64");
  const size_t itemsize = dtype_size(static_cast<DType>(dtype));
  if (static_cast<size_t>(count) > static_cast<size_t>(PY_SSIZE_T_MAX) / itemsize)
    return fail(PyExc_ValueError, "count x itemsize overflows");
  if (address == 0 && count > 0) return fail(PyExc_ValueError, "address 0 (a null pointer) with elements");
  int readonly = 0;
  if (a[3] != nullptr && (readonly = PyObject_IsTrue(a[3])) < 0) return nullptr;
  auto* self = reinterpret_cast<MemoryObject*>(type->tp_alloc(type, 0));
  if (self == nullptr) return nullptr;
  self->view = {reinterpret_cast<void*>(static_cast<uintptr_t>(address)), static_cast<size_t>(count),
                static_cast<DType>(dtype), readonly != 0};
  self->shape = count;
  self->stride = static_cast<Py_ssize_t>(itemsize);
  self->keep = a[4] == Py_None ? nullptr : a[4];
  Py_XINCREF(self->keep);
  return reinterpret_cast<PyObject*>(self);
}

PyObject* vectorcall(PyObject* type, PyObject* const* args, size_t nargsf, PyObject* kwnames) {
  return make(reinterpret_cast<PyTypeObject*>(type), args, nargsf, kwnames);
}

// Calls that do not use vectorcall (PyObject_Call with a tuple and a dict).
PyObject* tp_new(PyTypeObject* type, PyObject* args, PyObject* kwargs) {
  py::tuple t = py::reinterpret_borrow<py::tuple>(args);
  std::vector<PyObject*> all(t.size());
  for (size_t i = 0; i < t.size(); ++i) all[i] = t[i].ptr();
  py::tuple names(kwargs ? PyDict_Size(kwargs) : 0);
  if (kwargs) {
    PyObject *k, *v;
    Py_ssize_t pos = 0, i = 0;
    while (PyDict_Next(kwargs, &pos, &k, &v)) {
      names[i++] = py::reinterpret_borrow<py::object>(k);
      all.push_back(v);
    }
  }
  return make(type, all.data(), t.size(), kwargs ? names.ptr() : nullptr);
}

void dealloc(PyObject* o) {
  Py_XDECREF(reinterpret_cast<MemoryObject*>(o)->keep);
  Py_TYPE(o)->tp_free(o);
}

int get_buffer(PyObject* o, Py_buffer* b, int flags) {
  auto* m = reinterpret_cast<MemoryObject*>(o);
  const char* format = buffer_format(m->view.dtype);
  if (format == nullptr) {
    PyErr_SetString(PyExc_BufferError, "pycomm.Memory: bfloat16 has no buffer-protocol format; pass the Memory "
                                       "to pycomm itself");
    return -1;
  }
  if ((flags & PyBUF_WRITABLE) && m->view.readonly) {
    PyErr_SetString(PyExc_BufferError, "pycomm.Memory: read-only memory");
    return -1;
  }
  b->buf = m->view.data;
  b->obj = o;
  Py_INCREF(o);
  b->len = m->shape * m->stride;
  b->readonly = m->view.readonly;
  b->itemsize = m->stride;
  b->format = (flags & PyBUF_FORMAT) ? const_cast<char*>(format) : nullptr;
  b->ndim = 1;
  b->shape = (flags & PyBUF_ND) ? &m->shape : nullptr;
  b->strides = (flags & PyBUF_STRIDES) == PyBUF_STRIDES ? &m->stride : nullptr;
  b->suboffsets = nullptr;
  b->internal = nullptr;
  return 0;
}

PyBufferProcs g_buffer = {get_buffer, nullptr};

MemoryObject* self_of(PyObject* o) { return reinterpret_cast<MemoryObject*>(o); }

PyObject* get_address(PyObject* o, void*) { return PyLong_FromVoidPtr(self_of(o)->view.data); }
PyObject* get_count(PyObject* o, void*) { return PyLong_FromSize_t(self_of(o)->view.count); }
PyObject* get_dtype(PyObject* o, void*) { return PyUnicode_FromString(dtype_name(self_of(o)->view.dtype)); }
PyObject* get_nbytes(PyObject* o, void*) {
  return PyLong_FromSize_t(self_of(o)->view.count * dtype_size(self_of(o)->view.dtype));
}
PyObject* get_readonly(PyObject* o, void*) { return PyBool_FromLong(self_of(o)->view.readonly); }
PyObject* get_keep(PyObject* o, void*) {
  PyObject* k = self_of(o)->keep ? self_of(o)->keep : Py_None;
  Py_INCREF(k);
  return k;
}

PyGetSetDef g_getset[] = {
    {"address", get_address, nullptr, "the first element's address", nullptr},
    {"count", get_count, nullptr, "elements", nullptr},
    {"dtype", get_dtype, nullptr, "the element type's name", nullptr},
    {"nbytes", get_nbytes, nullptr, "count x the element size", nullptr},
    {"readonly", get_readonly, nullptr, "whether pycomm may only read it", nullptr},
    {"keep", get_keep, nullptr, "the object held alive with it, or None", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr}};

PyObject* repr(PyObject* o) {
  const MemoryView& v = self_of(o)->view;
  char text[160];
  snprintf(text, sizeof text, "pycomm.Memory(address=0x%llx, count=%zu, dtype='%s'%s)",
           static_cast<unsigned long long>(reinterpret_cast<uintptr_t>(v.data)), v.count, dtype_name(v.dtype),
           v.readonly ? ", readonly=True" : "");
  return PyUnicode_FromString(text);
}

}  // namespace

bool memory_view(PyObject* obj, MemoryView* view) {
  if (!PyObject_TypeCheck(obj, &g_type)) return false;
  if (view != nullptr) *view = self_of(obj)->view;
  return true;
}

void bind_memory(py::module_& m) {
  Py_SET_REFCNT(reinterpret_cast<PyObject*>(&g_type), 1);  // static: never freed
  g_type.tp_name = "pycomm.Memory";
  g_type.tp_basicsize = sizeof(MemoryObject);
  g_type.tp_flags = Py_TPFLAGS_DEFAULT;
  g_type.tp_doc =
      "Memory(address, count, dtype, readonly=False, keep=None)\n\n"
      "`count` elements of `dtype` (a name: 'float32', 'bfloat16', ...) at host address `address`, as a "
      "buffer for any pycomm operation. The caller vouches for the memory (as with mpi4py's "
      "MPI.buffer.fromaddress): valid, and writable unless readonly, while an op uses it. `keep` is held "
      "alive with the Memory (the tensor the address came from, for an async op).";
  g_type.tp_new = tp_new;
  g_type.tp_vectorcall = vectorcall;
  g_type.tp_dealloc = dealloc;
  g_type.tp_as_buffer = &g_buffer;
  g_type.tp_getset = g_getset;
  g_type.tp_repr = repr;
  if (PyType_Ready(&g_type) < 0) throw py::error_already_set();
  Py_INCREF(&g_type);
  m.attr("Memory") = py::reinterpret_borrow<py::object>(reinterpret_cast<PyObject*>(&g_type));
}

}  // namespace pycomm
