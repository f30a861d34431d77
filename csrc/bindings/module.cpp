// pycomm._C: the native core. Each part binds itself; this file only gathers.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "../collectives/operation.h"
#include "../common/dtype.h"
#include "../cuda/runtime.h"
#include "../kernels/reduce.h"
#include "errors.h"
#include "fast_call.h"
#include "memory.h"

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
  // numpy's C API (HostBuffer reads arrays through it), looked up now, on the
  // importing thread: its first use releases and retakes the GIL, which a
  // daemon thread must not do as the interpreter exits (see gil.h).
  py::detail::npy_api::get();
  pycomm::bind_memory(m);
  pycomm::bind_kernels(m);
  pycomm::bind_comm(m);
  pycomm::bind_quantize(m);
  pycomm::bind_cuda(m);
  // The codes and the table of operations, defined once in C++ (dtype.h,
  // operation.h); the Python layers read them from here.
  py::dict dtypes, ops;
  for (int i = 0; i < pycomm::kNumDTypes; ++i) dtypes[pycomm::dtype_name(static_cast<pycomm::DType>(i))] = i;
  for (int i = 0; i < pycomm::kNumRedOps; ++i) ops[pycomm::redop_name(static_cast<pycomm::RedOp>(i))] = i;
  m.attr("DTYPES") = dtypes;
  m.attr("REDUCE_OPS") = ops;
  m.def("set_trace_calls", &pycomm::set_trace_calls);
  m.def("operations", [] {
    size_t n = 0;
    const pycomm::OpInfo* table = pycomm::op_table(&n);
    py::dict out;
    const char* extents[] = {"none", "count", "ranks", "count at root", "ranks at root", "mine", "sum",
                             "recv sum"};
    for (size_t i = 0; i < n; ++i) {
      const pycomm::OpInfo& op = table[i];
      py::dict row;
      row["reduces"] = op.reduces;
      row["rooted"] = op.rooted;
      row["code"] = static_cast<int>(op.coll);
      row["int8"] = op.int8;
      row["counts"] = op.counts;
      row["in_place"] = op.in_place;
      row["in"] = extents[static_cast<int>(op.in)];
      row["out"] = extents[static_cast<int>(op.out)];
      row["gpu"] = op.ipc != nullptr;  // uncompressed; the int8 allreduce has its own GPU path
      row["busbw"] = py::cpp_function([b = op.busbw](int size) { return pycomm::busbw_factor(b, size); });
      out[op.name] = row;
    }
    return out;
  }, "Every operation of the core (csrc/collectives/operation.h): name -> what it takes, its buffer "
     "extents ('count' or 'ranks' x count), whether GPU buffers have a path, and busbw(size), "
     "nccl-tests' bus-bandwidth factor.");
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
