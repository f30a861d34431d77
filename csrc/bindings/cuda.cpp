// Python binding of the CUDA kernels: submodule `_C.cuda`, for tests,
// benchmarks and the GPU data path's Python layers. Buffers are raw device
// pointers and streams raw cudaStream_t values, both as Python ints (torch:
// t.data_ptr(), torch.cuda.current_stream().cuda_stream); dtype and op are the
// integer codes of common/dtype.h. Every kernel call is asynchronous on
// `stream` and runs with the GIL released.
//
// Without CUDA in the build, built() is False, device_count() 0, and the
// kernel calls raise RuntimeError; with CUDA but no usable GPU they raise
// pycomm.CommError naming the reason.

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <vector>

#include "bindings/arg_checks.h"
#include "bindings/gil.h"
#include "common/dtype.h"
#include "cuda/cuda_kernels.h"
#include "cuda/runtime.h"

namespace py = pybind11;

namespace pycomm {
namespace {

void* as_ptr(uintptr_t p) { return reinterpret_cast<void*>(p); }

// An optional pointer: None or 0 is none.
uintptr_t optional_ptr(const py::object& p) { return p.is_none() ? 0 : p.cast<uintptr_t>(); }

size_t checked_count(long long count) {
  if (count < 0) throw py::value_error("count must be >= 0");
  return static_cast<size_t>(count);
}

// A device pointer the kernels may read `width`-byte elements through:
// non-null (when there is anything to read) and aligned.
void check_ptr(uintptr_t p, size_t width, size_t count, const char* name) {
  if (count == 0) return;
  if (p == 0) throw py::value_error(std::string(name) + " is a null pointer");
  checks::aligned(p, width, name);
}

void check_float_dtype(DType dtype) {
  if (dtype != DType::kFloat32 && dtype != DType::kFloat16 && dtype != DType::kBFloat16) {
    throw py::type_error(std::string("dtype must be float32, float16 or bfloat16, got ") +
                         dtype_name(dtype));
  }
}

void check_sources(size_t n, const char* what) {
  if (n < 1 || n > static_cast<size_t>(cuda::kMaxReduceSources)) {
    throw py::value_error(std::string(what) + ": 1 to " +
                          std::to_string(cuda::kMaxReduceSources) + " sources, got " +
                          std::to_string(n));
  }
}

void py_reduce(uintptr_t dst, uintptr_t a, uintptr_t b, long long count, int dtype_code,
               int op_code, uintptr_t stream) {
  const DType dtype = checks::dtype_code(dtype_code);
  const RedOp op = checks::op_code(op_code);
  const size_t n = checked_count(count), w = dtype_size(dtype);
  check_ptr(dst, w, n, "dst");
  check_ptr(a, w, n, "a");
  check_ptr(b, w, n, "b");
  cuda::require_device();
  without_gil([&] {
    cuda::reduce(as_ptr(dst), as_ptr(a), as_ptr(b), n, dtype, op, as_ptr(stream));
  });
}

// Device pointers of `count` elements of `width` bytes each, checked.
std::vector<void*> checked_ptrs(const std::vector<uintptr_t>& ps, size_t width, size_t count,
                                const char* name) {
  std::vector<void*> out;
  for (uintptr_t p : ps) {
    check_ptr(p, width, count, name);
    out.push_back(as_ptr(p));
  }
  return out;
}

void py_reduce_n(uintptr_t dst, const std::vector<uintptr_t>& srcs, long long count,
                 int dtype_code, int op_code, uintptr_t stream) {
  const DType dtype = checks::dtype_code(dtype_code);
  const RedOp op = checks::op_code(op_code);
  const size_t n = checked_count(count), w = dtype_size(dtype);
  check_sources(srcs.size(), "reduce_n");
  check_ptr(dst, w, n, "dst");
  const std::vector<void*> p = checked_ptrs(srcs, w, n, "srcs[i]");
  const std::vector<const void*> cp(p.begin(), p.end());
  cuda::require_device();
  without_gil([&] {
    cuda::reduce_n(as_ptr(dst), cp.data(), static_cast<int>(cp.size()), n, dtype, op, as_ptr(stream));
  });
}

void py_reduce_n_to(const std::vector<uintptr_t>& dsts, const std::vector<uintptr_t>& srcs,
                    long long count, int dtype_code, int op_code, double divisor, uintptr_t stream) {
  const DType dtype = checks::dtype_code(dtype_code);
  const RedOp op = checks::op_code(op_code);
  const size_t n = checked_count(count), w = dtype_size(dtype);
  check_sources(srcs.size(), "reduce_n_to");
  check_sources(dsts.size(), "reduce_n_to targets");
  const std::vector<void*> d = checked_ptrs(dsts, w, n, "dsts[i]");
  const std::vector<void*> p = checked_ptrs(srcs, w, n, "srcs[i]");
  const std::vector<const void*> cp(p.begin(), p.end());
  cuda::require_device();
  without_gil([&] {
    cuda::reduce_n_to(d.data(), static_cast<int>(d.size()), cp.data(), static_cast<int>(cp.size()), n,
                      dtype, op, divisor, as_ptr(stream));
  });
}

void py_divide(uintptr_t dst, long long count, int dtype_code, double divisor,
               uintptr_t stream) {
  const DType dtype = checks::dtype_code(dtype_code);
  if (!dtype_is_floating(dtype)) throw py::value_error("divide supports floating dtypes only");
  const size_t n = checked_count(count);
  check_ptr(dst, dtype_size(dtype), n, "dst");
  cuda::require_device();
  without_gil([&] {
    cuda::divide(as_ptr(dst), n, dtype, divisor, as_ptr(stream));
  });
}

void py_quantize(uintptr_t x, int dtype_code, long long count, long long block_size,
                 bool stochastic, uint64_t seed, const py::object& residual_ptr, uintptr_t q,
                 uintptr_t scales, uintptr_t stream) {
  const uintptr_t residual = optional_ptr(residual_ptr);
  const DType dtype = checks::dtype_code(dtype_code);
  check_float_dtype(dtype);
  const size_t n = checked_count(count), bs = checks::block_size(block_size);
  check_ptr(x, dtype_size(dtype), n, "x");
  check_ptr(q, 1, n, "q");
  check_ptr(scales, 4, n, "scales");
  if (residual != 0) check_ptr(residual, 4, n, "residual");
  cuda::require_device();
  without_gil([&] {
    cuda::quantize_int8(as_ptr(x), dtype, n, bs, stochastic, seed,
                        static_cast<float*>(as_ptr(residual)), static_cast<int8_t*>(as_ptr(q)),
                        static_cast<float*>(as_ptr(scales)), as_ptr(stream));
  });
}

void py_dequantize(uintptr_t q, uintptr_t scales, long long count, long long block_size,
                   uintptr_t out, bool accumulate, uintptr_t stream) {
  const size_t n = checked_count(count), bs = checks::block_size(block_size);
  check_ptr(q, 1, n, "q");
  check_ptr(scales, 4, n, "scales");
  check_ptr(out, 4, n, "out");
  cuda::require_device();
  without_gil([&] {
    const auto* qp = static_cast<const int8_t*>(as_ptr(q));
    const auto* sp = static_cast<const float*>(as_ptr(scales));
    auto* op = static_cast<float*>(as_ptr(out));
    if (accumulate) {
      cuda::dequantize_accumulate_int8(qp, sp, n, bs, op, as_ptr(stream));
    } else {
      cuda::dequantize_int8(qp, sp, n, bs, op, as_ptr(stream));
    }
  });
}

void py_reduce_requantize(const std::vector<uintptr_t>& qs, const std::vector<uintptr_t>& ss,
                          long long count, long long block_size, float divisor,
                          bool stochastic, uint64_t seed, const py::object& residual_ptr,
                          uintptr_t q_out, uintptr_t s_out, uintptr_t stream,
                          const py::object& dense_ptr, int dense_index) {
  const uintptr_t residual = optional_ptr(residual_ptr), dense = optional_ptr(dense_ptr);
  const size_t n = checked_count(count), bs = checks::block_size(block_size);
  check_sources(qs.size(), "reduce_requantize_int8");
  if (ss.size() != qs.size()) throw py::value_error("qs and ss must have the same length");
  std::vector<const int8_t*> qp;
  std::vector<const float*> sp;
  if (dense != 0) check_ptr(dense, 4, n, "dense");
  for (size_t r = 0; r < qs.size(); ++r) {
    if (dense != 0 && static_cast<int>(r) == dense_index) {  // not read
      qp.push_back(nullptr);
      sp.push_back(nullptr);
      continue;
    }
    check_ptr(qs[r], 1, n, "qs[i]");
    check_ptr(ss[r], 4, n, "ss[i]");
    qp.push_back(static_cast<const int8_t*>(as_ptr(qs[r])));
    sp.push_back(static_cast<const float*>(as_ptr(ss[r])));
  }
  check_ptr(q_out, 1, n, "q_out");
  check_ptr(s_out, 4, n, "s_out");
  if (residual != 0) check_ptr(residual, 4, n, "residual");
  cuda::require_device();
  without_gil([&] {
    cuda::reduce_requantize_int8(qp.data(), sp.data(), static_cast<int>(qp.size()), n, bs, divisor,
                                 stochastic, seed, static_cast<float*>(as_ptr(residual)),
                                 static_cast<int8_t*>(as_ptr(q_out)),
                                 static_cast<float*>(as_ptr(s_out)),
                                 static_cast<const float*>(as_ptr(dense)), dense_index,
                                 as_ptr(stream));
  });
}

void py_widen(uintptr_t x, int dtype_code, long long count, const py::object& residual_ptr,
              uintptr_t out, uintptr_t stream) {
  const DType dtype = checks::dtype_code(dtype_code);
  check_float_dtype(dtype);
  const size_t n = checked_count(count);
  const uintptr_t residual = optional_ptr(residual_ptr);
  check_ptr(x, dtype_size(dtype), n, "x");
  check_ptr(out, 4, n, "out");
  if (residual != 0) check_ptr(residual, 4, n, "residual");
  cuda::require_device();
  without_gil([&] {
    cuda::widen_to_float32(as_ptr(x), dtype, n, static_cast<const float*>(as_ptr(residual)),
                           static_cast<float*>(as_ptr(out)), as_ptr(stream));
  });
}

}  // namespace

void bind_cuda(py::module_& m) {
  py::module_ c = m.def_submodule(
      "cuda", "CUDA kernels on raw device pointers (ints); bitwise the CPU kernels' results");
  c.def("built", &cuda::built, "Whether this build has the CUDA kernels.");
  c.def("archs", &cuda::archs, "GPU architectures compiled into this build.");
  c.def("device_count", &cuda::device_count,
        "GPUs visible to this process; 0 without CUDA, a driver or a device.");
  c.def("no_device_reason", &cuda::no_device_reason, "Why device_count() is 0 ('' if it is not).");
  c.def("device_name", &cuda::device_name, py::arg("index"));
  c.def("runtime_version", &cuda::runtime_version,
        "CUDA runtime version built in (1000 * major + 10 * minor), 0 without CUDA.");
  c.def("driver_version", &cuda::driver_version, "The driver's CUDA version, 0 if none.");
  c.def("reduce", &py_reduce, py::arg("dst"), py::arg("a"), py::arg("b"), py::arg("count"),
        py::arg("dtype"), py::arg("op"), py::arg("stream") = 0,
        "dst = a op b elementwise (dst may be a or b); avg reduces as sum.");
  c.def("reduce_n", &py_reduce_n, py::arg("dst"), py::arg("srcs"), py::arg("count"),
        py::arg("dtype"), py::arg("op"), py::arg("stream") = 0,
        "dst = srcs[0] op srcs[1] op ... in order (1 to 16 sources; float32 accumulation "
        "for half types, rounded once).");
  c.def("reduce_n_to", &py_reduce_n_to, py::arg("dsts"), py::arg("srcs"), py::arg("count"),
        py::arg("dtype"), py::arg("op"), py::arg("divisor") = 1.0, py::arg("stream") = 0,
        "reduce_n written to every one of dsts (1 to 16) in one pass; op avg sums, then "
        "divides each result by divisor as divide does.");
  c.def("divide", &py_divide, py::arg("dst"), py::arg("count"), py::arg("dtype"),
        py::arg("divisor"), py::arg("stream") = 0, "dst /= divisor, floating dtypes.");
  c.def("quantize_int8", &py_quantize, py::arg("x"), py::arg("dtype"), py::arg("count"),
        py::arg("block_size"), py::arg("stochastic"), py::arg("seed"), py::arg("residual"),
        py::arg("q"), py::arg("scales"), py::arg("stream") = 0,
        "Block-wise int8 quantization as pycomm.quantize_int8; residual 0 or None: none.");
  c.def("dequantize_int8", &py_dequantize, py::arg("q"), py::arg("scales"), py::arg("count"),
        py::arg("block_size"), py::arg("out"), py::arg("accumulate") = false,
        py::arg("stream") = 0, "out = q * scale (float32); out += q * scale when accumulate.");
  c.def("reduce_requantize_int8", &py_reduce_requantize, py::arg("qs"), py::arg("ss"),
        py::arg("count"), py::arg("block_size"), py::arg("divisor"), py::arg("stochastic"),
        py::arg("seed"), py::arg("residual"), py::arg("q_out"), py::arg("s_out"),
        py::arg("stream") = 0, py::arg("dense") = py::none(), py::arg("dense_index") = 0,
        "Sum of the dequantized sources (in order; dense: float32 values standing for source "
        "dense_index), / divisor, + residual, quantized again.");
  c.def("widen_to_float32", &py_widen, py::arg("x"), py::arg("dtype"), py::arg("count"),
        py::arg("residual"), py::arg("out"), py::arg("stream") = 0,
        "out = float32(x) (+ residual): a rank's own, unquantized contribution.");
}

}  // namespace pycomm
