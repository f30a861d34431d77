#include "buffer.h"

#include "memory.h"

#include <pybind11/numpy.h>

#include <cstring>
#include <string>

namespace py = pybind11;

namespace pycomm {
namespace {

// DLPack's ABI (dlpack.h v0.8), declared here to avoid a dependency.
struct DLDevice { int32_t device_type; int32_t device_id; };
struct DLDataType { uint8_t code; uint8_t bits; uint16_t lanes; };
struct DLTensor {
  void* data;
  DLDevice device;
  int32_t ndim;
  DLDataType dtype;
  int64_t* shape;
  int64_t* strides;
  uint64_t byte_offset;
};
struct DLManagedTensor {
  DLTensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(DLManagedTensor*);
};
enum { kDLCPU = 1, kDLCUDAHost = 3 };
enum { kDLInt = 0, kDLUInt = 1, kDLFloat = 2, kDLBfloat = 4 };

bool dtype_from_format(const char* fmt, ssize_t itemsize, DType* out) {
  if (*fmt == '<' || *fmt == '=' || *fmt == '@' || *fmt == '!') ++fmt;
  if (fmt[0] == '\0' || fmt[1] != '\0') return false;
  switch (fmt[0]) {
    case 'f': *out = DType::kFloat32; return itemsize == 4;
    case 'd': *out = DType::kFloat64; return itemsize == 8;
    case 'e': *out = DType::kFloat16; return itemsize == 2;
    case 'b': *out = DType::kInt8; return itemsize == 1;
    case 'B': *out = DType::kUInt8; return itemsize == 1;
    case 'i': case 'l': case 'q':
      if (itemsize == 4) { *out = DType::kInt32; return true; }
      if (itemsize == 8) { *out = DType::kInt64; return true; }
      return false;
  }
  return false;
}

bool dtype_from_dlpack(DLDataType t, DType* out) {
  if (t.lanes != 1) return false;
  switch (t.code) {
    case kDLFloat:
      if (t.bits == 32) *out = DType::kFloat32;
      else if (t.bits == 64) *out = DType::kFloat64;
      else if (t.bits == 16) *out = DType::kFloat16;
      else return false;
      return true;
    case kDLBfloat: *out = DType::kBFloat16; return t.bits == 16;
    case kDLInt:
      if (t.bits == 8) *out = DType::kInt8;
      else if (t.bits == 32) *out = DType::kInt32;
      else if (t.bits == 64) *out = DType::kInt64;
      else return false;
      return true;
    case kDLUInt: *out = DType::kUInt8; return t.bits == 8;
  }
  return false;
}

const char* kSupported = "float32, float64, float16, bfloat16, int8, uint8, int32 or int64";

bool dtype_from_numpy(int type_num, DType* out) {
  using api = py::detail::npy_api;
  switch (type_num) {
    case api::NPY_FLOAT_: *out = DType::kFloat32; return true;
    case api::NPY_DOUBLE_: *out = DType::kFloat64; return true;
    case 23: *out = DType::kFloat16; return true;  // NPY_HALF
    case api::NPY_BYTE_: *out = DType::kInt8; return true;
    case api::NPY_UBYTE_: *out = DType::kUInt8; return true;
    case api::NPY_INT_: *out = sizeof(int) == 4 ? DType::kInt32 : DType::kInt64; return sizeof(int) >= 4;
    case api::NPY_LONG_: *out = sizeof(long) == 8 ? DType::kInt64 : DType::kInt32; return sizeof(long) >= 4;
    case api::NPY_LONGLONG_: *out = DType::kInt64; return sizeof(long long) == 8;
  }
  return false;
}

}  // namespace

// A numpy array read from its struct, as numpy's own C API does: the buffer
// protocol would build a format string and a Py_buffer on every call, which
// is most of a small op's binding cost. Anything unusual (another byte
// order, an unsupported dtype, not C-contiguous, read-only where written)
// returns false and takes the general path below, which words the error.
bool HostBuffer::from_numpy(py::handle obj, bool writable) {
  using api = py::detail::npy_api;
  if (!api::get().PyArray_Check_(obj.ptr())) return false;
  const auto* a = py::detail::array_proxy(obj.ptr());
  const auto* d = py::detail::array_descriptor_proxy(a->descr);
  if (d->byteorder == '>' || !dtype_from_numpy(d->type_num, &dtype_)) return false;
  if (!(a->flags & api::NPY_ARRAY_C_CONTIGUOUS_) || (writable && !(a->flags & api::NPY_ARRAY_WRITEABLE_)))
    return false;
  size_t count = 1;
  for (int i = 0; i < a->nd; ++i) count *= static_cast<size_t>(a->dimensions[i]);
  data_ = a->data;
  count_ = count;
  array_ = py::reinterpret_borrow<py::object>(obj);  // alive while an async op uses it
  return true;
}

HostBuffer::HostBuffer(py::handle obj, const char* what, bool writable) {
  if (from_numpy(obj, writable)) return;
  MemoryView m;
  if (memory_view(obj.ptr(), &m)) {
    if (writable && m.readonly) throw py::value_error(std::string(what) + " is read-only but is written to");
    data_ = m.data;
    count_ = m.count;
    dtype_ = m.dtype;
    array_ = py::reinterpret_borrow<py::object>(obj);  // alive while an async op uses it
    return;
  }
  if (PyObject_CheckBuffer(obj.ptr())) {
    if (PyObject_GetBuffer(obj.ptr(), &view_, PyBUF_RECORDS_RO) != 0) throw py::error_already_set();
    has_view_ = true;
    if (!dtype_from_format(view_.format ? view_.format : "B", view_.itemsize, &dtype_))
      throw py::type_error(std::string(what) + " has an unsupported element type (buffer format '" +
                           (view_.format ? view_.format : "B") + "'); pycomm supports " + kSupported);
    if (!PyBuffer_IsContiguous(&view_, 'C'))
      throw py::value_error(std::string(what) + " must be C-contiguous (use numpy.ascontiguousarray)");
    if (writable && view_.readonly)
      throw py::value_error(std::string(what) + " is read-only but is written to");
    data_ = view_.buf;
    count_ = static_cast<size_t>(view_.len / view_.itemsize);
    return;
  }
  if (!py::hasattr(obj, "__dlpack__"))
    throw py::type_error(std::string(what) + " must be a numpy array, an object with __dlpack__ "
                         "(a CPU torch tensor) or one with the buffer protocol, not " +
                         std::string(py::str(py::type::handle_of(obj).attr("__name__"))));
  capsule_ = obj.attr("__dlpack__")();
  auto* mt = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(capsule_.ptr(), "dltensor"));
  if (!mt) throw py::error_already_set();
  const DLTensor& t = mt->dl_tensor;
  if (t.device.device_type != kDLCPU && t.device.device_type != kDLCUDAHost)
    throw py::value_error(std::string(what) + " is not in host memory (DLPack device type " +
                          std::to_string(t.device.device_type) + "); move it to the CPU first");
  if (!dtype_from_dlpack(t.dtype, &dtype_))
    throw py::type_error(std::string(what) + " has an unsupported element type; pycomm supports " +
                         kSupported);
  size_t count = 1;
  int64_t expected = 1;
  bool contiguous = true;
  for (int d = t.ndim - 1; d >= 0; --d) {
    if (t.strides && t.shape[d] != 1 && t.strides[d] != expected) contiguous = false;
    expected *= t.shape[d];
    count *= static_cast<size_t>(t.shape[d]);
  }
  // An empty tensor's strides mean nothing (torch gives them as 0).
  if (!contiguous && count != 0)
    throw py::value_error(std::string(what) + " must be contiguous (call .contiguous() first)");
  data_ = static_cast<char*>(t.data) + t.byte_offset;
  count_ = count;
}

HostBuffer::~HostBuffer() {
  if (has_view_) PyBuffer_Release(&view_);
}

}  // namespace pycomm
