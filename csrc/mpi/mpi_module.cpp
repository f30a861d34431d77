// pycomm._mpi: the MPI transport, built against the MPI that mpi4py uses
// (setup.py finds it through mpicxx) and handed to pycomm._C in a capsule.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <type_traits>

#include "../bindings/errors.h"
#include "../bindings/gil.h"
#include "../bindings/transport_capsule.h"
#include "mpi_transport.h"

namespace py = pybind11;

namespace {

// mpi4py gives a communicator's C handle as an integer: a pointer in Open
// MPI, an int in MPICH.
template <typename Handle>
Handle handle_from_int(uintptr_t v) {
  if constexpr (std::is_pointer_v<Handle>)
    return reinterpret_cast<Handle>(v);
  else
    return static_cast<Handle>(v);
}

}  // namespace

PYBIND11_MODULE(_mpi, m) {
  m.doc() = "pycomm's MPI transport (pycomm moves its ring and two-shot traffic over MPI point-to-point)";
  pycomm::register_error_translator();
  m.def("library_version", [] {
    char text[MPI_MAX_LIBRARY_VERSION_STRING];
    int len = 0;
    MPI_Get_library_version(text, &len);
    return std::string(text, len);
  }, "MPI_Get_library_version() of the MPI this module was built against");
  m.def(
      "transport",
      [](uintptr_t comm, size_t chunk_bytes, int slots, size_t eager_bytes, size_t channel_bytes, int spin_us,
         int local_ranks) {
        pycomm::MpiOptions o;
        o.chunk_bytes = chunk_bytes;
        o.slots = slots;
        o.eager_bytes = eager_bytes;
        o.channel_bytes = channel_bytes;
        o.spin_us = spin_us;
        o.local_ranks = local_ranks;
        // MPI_Comm_dup is collective: peers may need this process's threads.
        std::unique_ptr<pycomm::Transport> t = pycomm::without_gil(
            [&] { return std::make_unique<pycomm::MpiTransport>(handle_from_int<MPI_Comm>(comm), o); });
        return pycomm::wrap_transport(std::move(t));
      },
      py::arg("comm_handle"), py::arg("chunk_bytes") = pycomm::MpiOptions().chunk_bytes,
      py::arg("slots") = pycomm::MpiOptions().slots, py::arg("eager_bytes") = pycomm::MpiOptions().eager_bytes,
      py::arg("channel_bytes") = pycomm::MpiOptions().channel_bytes,
      py::arg("spin_us") = -1, py::arg("local_ranks") = 0,
      "A transport over a duplicate of the MPI communicator whose C handle is comm_handle (collective)");
}
