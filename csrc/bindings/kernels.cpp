// Python binding of the reduction kernels: submodule `_C.kernels`.
// Buffers are raw bytes (any C-contiguous buffer, e.g. numpy arrays); the
// dtype code says how to read them. Used by tests and benchmarks, and as the
// reference the collectives' fused reductions are checked against.

#include <pybind11/pybind11.h>

#include <cstdint>
#include <initializer_list>
#include <string>

#include "bindings/arg_checks.h"
#include "bindings/gil.h"
#include "common/dtype.h"
#include "kernels/reduce.h"

namespace py = pybind11;

namespace pycomm {
namespace {

using kernels::Isa;

bool c_contiguous(const py::buffer_info& info) {
  py::ssize_t expected = info.itemsize;
  for (py::ssize_t i = info.ndim - 1; i >= 0; --i) {
    if (info.shape[i] != 1 && info.strides[i] != expected) return false;
    expected *= info.shape[i];
  }
  return true;
}

// Byte size of a C-contiguous buffer whose size and address suit `dtype`.
size_t checked_nbytes(const py::buffer_info& info, DType dtype, const char* name) {
  if (!c_contiguous(info)) throw py::value_error(std::string(name) + " must be C-contiguous");
  const size_t nbytes = static_cast<size_t>(info.size * info.itemsize);
  const size_t width = dtype_size(dtype);
  if (nbytes % width != 0) {
    throw py::value_error(std::string(name) + ": byte size is not a multiple of the " +
                          dtype_name(dtype) + " size");
  }
  checks::aligned(reinterpret_cast<uintptr_t>(info.ptr), width, name);
  return nbytes;
}

// The kernels allow dst == a, not a shifted overlap (vector lanes would read
// values already written).
bool partly_overlap(const void* p, const void* q, size_t nbytes) {
  const auto x = reinterpret_cast<uintptr_t>(p), y = reinterpret_cast<uintptr_t>(q);
  return x != y && x < y + nbytes && y < x + nbytes;
}

Isa isa_from_name(const std::string& name) {
  for (Isa isa : {Isa::kBaseline, Isa::kAvx2, Isa::kAvx512}) {
    if (name == kernels::isa_name(isa)) return isa;
  }
  throw py::value_error("unknown ISA '" + name + "' (expected baseline, avx2 or avx512)");
}

void py_reduce(const py::buffer& dst, const py::buffer& a, const py::buffer& b, int dtype_code,
               int op_code) {
  const DType dtype = checks::dtype_code(dtype_code);
  const RedOp op = checks::op_code(op_code);
  const py::buffer_info d = dst.request(/*writable=*/true), x = a.request(), y = b.request();
  const size_t nbytes = checked_nbytes(d, dtype, "dst");
  if (checked_nbytes(x, dtype, "a") != nbytes || checked_nbytes(y, dtype, "b") != nbytes) {
    throw py::value_error("dst, a and b must have the same byte size");
  }
  if (partly_overlap(d.ptr, x.ptr, nbytes) || partly_overlap(d.ptr, y.ptr, nbytes)) {
    throw py::value_error("dst may be a or b, but must not partly overlap them");
  }
  without_gil([&] {
    kernels::reduce(d.ptr, x.ptr, y.ptr, nbytes / dtype_size(dtype), dtype, op);
  });
}

void py_divide(const py::buffer& dst, int dtype_code, double divisor) {
  const DType dtype = checks::dtype_code(dtype_code);
  if (!dtype_is_floating(dtype)) throw py::value_error("divide supports floating dtypes only");
  const py::buffer_info d = dst.request(/*writable=*/true);
  const size_t nbytes = checked_nbytes(d, dtype, "dst");
  without_gil([&] {
    kernels::divide(d.ptr, nbytes / dtype_size(dtype), dtype, divisor);
  });
}

void py_copy(const py::buffer& dst, const py::buffer& src, bool stream) {
  const py::buffer_info d = dst.request(/*writable=*/true), s = src.request();
  const size_t nbytes = checked_nbytes(d, DType::kUInt8, "dst");
  if (checked_nbytes(s, DType::kUInt8, "src") != nbytes) throw py::value_error("dst and src must have the same byte size");
  if (partly_overlap(d.ptr, s.ptr, nbytes) || (d.ptr == s.ptr && nbytes)) throw py::value_error("dst and src overlap");
  without_gil([&] { (stream ? kernels::copy_stream : kernels::copy)(d.ptr, s.ptr, nbytes); });
}

}  // namespace

void bind_kernels(py::module_& m) {
  py::module_ k = m.def_submodule("kernels", "CPU reduction kernels with run-time ISA dispatch");
  k.def("reduce", &py_reduce, py::arg("dst"), py::arg("a"), py::arg("b"), py::arg("dtype"),
        py::arg("op"),
        "dst = a op b elementwise over raw buffers of equal byte size (dst may be a or b). "
        "avg reduces as sum.");
  k.def("divide", &py_divide, py::arg("dst"), py::arg("dtype"), py::arg("divisor"),
        "dst /= divisor in place, floating dtypes only (float32 math for half types).");
  k.def("copy", &py_copy, py::arg("dst"), py::arg("src"), py::arg("stream") = false,
        "dst = src, C-contiguous buffers of one byte size that do not overlap; stream: "
        "with non-temporal stores (copy_stream).");
  k.def("active_isa", [] { return kernels::isa_name(kernels::active_isa()); },
        "Instruction set the kernels use now.");
  k.def("best_isa", [] { return kernels::isa_name(kernels::best_supported_isa()); },
        "Best instruction set this CPU supports.");
  k.def("set_isa", [](const std::string& name) { return kernels::set_isa(isa_from_name(name)); },
        py::arg("name"),
        "Use `name` (baseline, avx2, avx512); False, and no change, if the CPU lacks it.");
}

}  // namespace pycomm
