#include "arg_checks.h"

#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "../common/error.h"
#include "../cuda/runtime.h"
#include "../kernels/quantize_int8.h"
#include "gil.h"

namespace py = pybind11;

namespace pycomm {
namespace checks {

double timeout(double t) {
  if (!(t > 0)) throw py::value_error(strprintf("timeout must be a positive number of seconds, got %g", t));
  return t;
}

DType dtype_code(int code) {
  if (code < 0 || code >= kNumDTypes) throw py::value_error(strprintf("unknown dtype code %d", code));
  return static_cast<DType>(code);
}

RedOp op_code(int op) {
  if (op < 0 || op >= kNumRedOps) throw py::value_error(strprintf("unknown reduction op %d", op));
  return static_cast<RedOp>(op);
}

RedOp reduce_op(int op, DType dtype) {
  RedOp r = op_code(op);
  if (r == RedOp::kAvg && !dtype_is_floating(dtype))
    throw py::value_error(std::string("op avg needs a floating-point dtype, got ") + dtype_name(dtype));
  return r;
}

size_t block_size(long long b) {
  if (b < 0 || !kernels::quant_block_size_ok(static_cast<size_t>(b)))
    throw py::value_error(strprintf("block_size must be a power of two in [32, 4096], got %lld", b));
  return static_cast<size_t>(b);
}

void aligned(uintptr_t address, size_t width, const char* what) {
  if (address % width) throw py::value_error(strprintf("%s is not aligned to its %zu-byte elements", what, width));
}

void aligned(const HostBuffer& b, const char* what) {
  aligned(reinterpret_cast<uintptr_t>(b.data()), dtype_size(b.dtype()), what);
}

void buffer(const HostBuffer& b, DType dtype, size_t count, const char* what) {
  if (b.dtype() != dtype)
    throw py::type_error(strprintf("%s must be %s, got %s", what, dtype_name(dtype), dtype_name(b.dtype())));
  if (b.count() != count)
    throw py::value_error(strprintf("%s must have %zu elements, got %zu", what, count, b.count()));
  aligned(b, what);
}

void int8_input(const HostBuffer& x) {
  const DType d = x.dtype();
  if (d != DType::kFloat32 && d != DType::kFloat16 && d != DType::kBFloat16)
    throw py::type_error(std::string("compress='int8' needs float32, float16 or bfloat16 input, got ") +
                         dtype_name(d));
  aligned(x, "x");
}

RedOp int8_op(int op) {
  RedOp r = reduce_op(op, DType::kFloat32);
  if (r != RedOp::kSum && r != RedOp::kAvg)
    throw py::value_error(std::string("compress='int8' supports op sum and avg, not ") + redop_name(r));
  return r;
}

void no_overlap(const HostBuffer& x, const HostBuffer& out) {
  auto x0 = reinterpret_cast<uintptr_t>(x.data()), o0 = reinterpret_cast<uintptr_t>(out.data());
  if (x0 < o0 + out.nbytes() && o0 < x0 + x.nbytes())
    throw py::value_error("out overlaps x: pass separate buffers (see the docstring for in place)");
}

void same_type(const HostBuffer& x, const HostBuffer& out) {
  if (x.dtype() != out.dtype())
    throw py::type_error(std::string("out has dtype ") + dtype_name(out.dtype()) + ", x has " +
                         dtype_name(x.dtype()));
}

void device_pointers(const CollArgs& a) {
  if (a.count == 0 && !a.counts) return;
  int din = -2, dout = -2;
  without_gil([&] {  // the first CUDA call may start the runtime
    if (a.in) din = cuda::device_of(a.in);
    if (a.out) dout = cuda::device_of(a.out);
  });
  if (din == -1 || dout == -1)
    throw py::value_error(strprintf("%s is not in GPU memory (CUDA sees no device allocation at %p)",
                                    din == -1 ? "x" : "out", din == -1 ? a.in : a.out));
  if (din >= 0 && dout >= 0 && din != dout)
    throw py::value_error(strprintf("x is on GPU %d and out on GPU %d", din, dout));
}

}  // namespace checks
}  // namespace pycomm
