// Python binding of the int8 quantization kernels (kernels/quantize_int8.h):
// _C._quantize_int8 and _C._dequantize_int8, wrapped by pycomm/quantize.py,
// which allocates the outputs. Inputs go through HostBuffer (numpy, buffer
// protocol, or DLPack such as CPU torch tensors incl. bfloat16).

#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "bindings/gil.h"
#include "arg_checks.h"
#include "buffer.h"
#include "common/dtype.h"
#include "kernels/quantize_int8.h"

namespace py = pybind11;

namespace pycomm {
namespace {

void py_quantize(py::handle x, long long block_size, bool stochastic, uint64_t seed,
                 py::handle residual, py::handle q_out, py::handle scales_out) {
  const size_t bs = checks::block_size(block_size);
  HostBuffer in(x, "x", /*writable=*/false);
  const DType dt = in.dtype();
  if (dt != DType::kFloat32 && dt != DType::kFloat16 && dt != DType::kBFloat16) {
    throw py::type_error(std::string("x must be float32, float16 or bfloat16, got ") +
                         dtype_name(dt));
  }
  checks::aligned(in, "x");
  const size_t n = in.count();
  HostBuffer q(q_out, "q_out", /*writable=*/true);
  checks::buffer(q, DType::kInt8, n, "q_out");
  HostBuffer s(scales_out, "scales_out", /*writable=*/true);
  checks::buffer(s, DType::kFloat32, kernels::quant_num_blocks(n, bs), "scales_out");
  float* res = nullptr;
  std::unique_ptr<HostBuffer> r;
  if (!residual.is_none()) {
    r = std::make_unique<HostBuffer>(residual, "residual", /*writable=*/true);
    checks::buffer(*r, DType::kFloat32, n, "residual");
    res = static_cast<float*>(r->data());
  }
  without_gil([&] {
    kernels::quantize_int8(in.data(), dt, n, bs, stochastic, seed, res,
                           static_cast<int8_t*>(q.data()), static_cast<float*>(s.data()));
  });
}

void py_dequantize(py::handle q_in, py::handle scales, long long block_size, py::handle out,
                   bool accumulate) {
  const size_t bs = checks::block_size(block_size);
  HostBuffer q(q_in, "q", /*writable=*/false);
  if (q.dtype() != DType::kInt8) {
    throw py::type_error(std::string("q must be int8, got ") + dtype_name(q.dtype()));
  }
  const size_t n = q.count();
  HostBuffer s(scales, "scales", /*writable=*/false);
  checks::buffer(s, DType::kFloat32, kernels::quant_num_blocks(n, bs), "scales");
  HostBuffer o(out, "out", /*writable=*/true);
  const DType od = o.dtype();
  const bool narrowed = !accumulate && (od == DType::kFloat16 || od == DType::kBFloat16);
  checks::buffer(o, narrowed ? od : DType::kFloat32, n, "out");
  without_gil([&] {
    const auto* qp = static_cast<const int8_t*>(q.data());
    const auto* sp = static_cast<const float*>(s.data());
    if (accumulate) {
      kernels::dequantize_accumulate_int8(qp, sp, n, bs, static_cast<float*>(o.data()));
    } else {
      kernels::dequantize_int8_as(qp, sp, n, bs, od, o.data());
    }
  });
}

// The owner's fused step of the compressed reduction, for tests and the GPU
// kernels' reference: qs / scales are lists of sources of equal count.
void py_reduce_requantize(py::list qs, py::list scales, long long block_size, float divisor,
                          bool stochastic, uint64_t seed, py::handle residual, py::handle q_out,
                          py::handle scales_out, py::handle dense, size_t dense_index,
                          py::handle dequant_out) {
  const size_t bs = checks::block_size(block_size);
  if (qs.size() == 0 || qs.size() != scales.size())
    throw py::value_error("need one scales array per q array, and at least one source");
  HostBuffer qo(q_out, "q_out", /*writable=*/true);
  const size_t n = qo.count(), nb = kernels::quant_num_blocks(n, bs);
  checks::buffer(qo, DType::kInt8, n, "q_out");
  HostBuffer so(scales_out, "scales_out", /*writable=*/true);
  checks::buffer(so, DType::kFloat32, nb, "scales_out");
  std::vector<std::unique_ptr<HostBuffer>> keep;
  std::vector<const int8_t*> qp;
  std::vector<const float*> sp;
  for (size_t i = 0; i < qs.size(); ++i) {
    keep.push_back(std::make_unique<HostBuffer>(qs[i], "q", /*writable=*/false));
    checks::buffer(*keep.back(), DType::kInt8, n, "q");
    qp.push_back(static_cast<const int8_t*>(keep.back()->data()));
    keep.push_back(std::make_unique<HostBuffer>(scales[i], "scales", /*writable=*/false));
    checks::buffer(*keep.back(), DType::kFloat32, nb, "scales");
    sp.push_back(static_cast<const float*>(keep.back()->data()));
  }
  float* res = nullptr;
  if (!residual.is_none()) {
    keep.push_back(std::make_unique<HostBuffer>(residual, "residual", /*writable=*/true));
    checks::buffer(*keep.back(), DType::kFloat32, n, "residual");
    res = static_cast<float*>(keep.back()->data());
  }
  // The float32 source standing for index dense_index, and the optional
  // dequantized copy of the result.
  auto float_buffer = [&](py::handle h, const char* name, bool writable) -> float* {
    if (h.is_none()) return nullptr;
    keep.push_back(std::make_unique<HostBuffer>(h, name, writable));
    checks::buffer(*keep.back(), DType::kFloat32, n, name);
    return static_cast<float*>(keep.back()->data());
  };
  const float* dn = float_buffer(dense, "dense", false);
  float* dq = float_buffer(dequant_out, "dequant_out", true);
  if (dn && dense_index >= qp.size())
    throw py::value_error("dense_index " + std::to_string(dense_index) + " is not a source");
  without_gil([&] {
    kernels::reduce_requantize_int8(qp.data(), sp.data(), qp.size(), n, bs, divisor, stochastic,
                                    seed, res, static_cast<int8_t*>(qo.data()),
                                    static_cast<float*>(so.data()), dn, dense_index, dq);
  });
}

}  // namespace

void bind_quantize(py::module_& m) {
  m.def("_quantize_int8", &py_quantize, py::arg("x"), py::arg("block_size"),
        py::arg("stochastic"), py::arg("seed"), py::arg("residual"), py::arg("q_out"),
        py::arg("scales_out"),
        "Block-wise symmetric int8 quantization of x (float32/float16/bfloat16) into q_out "
        "(int8, same count) and scales_out (float32, one per block); residual (float32 or "
        "None) is added first and updated in place (error feedback).");
  m.def("_dequantize_int8", &py_dequantize, py::arg("q"), py::arg("scales"),
        py::arg("block_size"), py::arg("out"), py::arg("accumulate"),
        "out = q * scale per block (float32, or rounded to out's float16/bfloat16); "
        "out += q * scale when accumulate (float32).");
  m.def("_reduce_requantize_int8", &py_reduce_requantize, py::arg("qs"), py::arg("scales"),
        py::arg("block_size"), py::arg("divisor"), py::arg("stochastic"), py::arg("seed"),
        py::arg("residual"), py::arg("q_out"), py::arg("scales_out"), py::arg("dense") = py::none(),
        py::arg("dense_index") = 0, py::arg("dequant_out") = py::none(),
        "Sum of the dequantized sources (in order, float32), divided by divisor when it is "
        "not 1, quantized into q_out / scales_out (with residual: error feedback). dense: "
        "float32 values standing for source dense_index; dequant_out: also the result "
        "dequantized.");
}

}  // namespace pycomm
