// pycomm._C: the native core. Each part binds itself; this file only gathers.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "../cuda/runtime.h"
#include "../kernels/reduce.h"
#include "errors.h"

namespace py = pybind11;

namespace pycomm {
void bind_kernels(py::module_& m);
void bind_comm(py::module_& m);
void bind_quantize(py::module_& m);
void bind_cuda(py::module_& m);
}  // namespace pycomm

PYBIND11_MODULE(_C, m) {
  m.doc() = "pycomm native core: kernels, transports, collectives, communicator";
  pycomm::register_error_translator();
  pycomm::bind_kernels(m);
  pycomm::bind_comm(m);
  pycomm::bind_quantize(m);
  pycomm::bind_cuda(m);
  m.def("build_info", [] {
    py::dict d;
    d["isa"] = pycomm::kernels::isa_name(pycomm::kernels::active_isa());
    d["best_isa"] = pycomm::kernels::isa_name(pycomm::kernels::best_supported_isa());
    d["cuda"] = pycomm::cuda::built();
    d["cuda_archs"] = pycomm::cuda::archs();
    d["compiler"] = __VERSION__;
    return d;
  });
}
