// A Transport built by another extension module, handed to the core as a
// Python capsule. The MPI transport lives in pycomm._mpi (built only where
// MPI is) and reaches pycomm._C this way; both are built by the same setup.py
// with the same compiler, so they share the Transport class's layout.
#pragma once

#include <pybind11/pybind11.h>

#include <memory>

#include "../transport/transport.h"

namespace pycomm {

inline constexpr const char* kTransportCapsule = "pycomm.Transport";

inline pybind11::object wrap_transport(std::unique_ptr<Transport> t) {
  using Holder = std::unique_ptr<Transport>;
  PyObject* cap = PyCapsule_New(new Holder(std::move(t)), kTransportCapsule, [](PyObject* o) {
    delete static_cast<Holder*>(PyCapsule_GetPointer(o, kTransportCapsule));
  });
  if (!cap) throw pybind11::error_already_set();
  return pybind11::reinterpret_steal<pybind11::object>(cap);
}

// Takes the transport out of the capsule (which is left empty).
inline std::unique_ptr<Transport> unwrap_transport(pybind11::handle capsule) {
  void* p = PyCapsule_IsValid(capsule.ptr(), kTransportCapsule)
                ? PyCapsule_GetPointer(capsule.ptr(), kTransportCapsule)
                : nullptr;
  if (!p) throw pybind11::type_error("expected a transport capsule made by pycomm._mpi");
  auto& held = *static_cast<std::unique_ptr<Transport>*>(p);
  if (!held) throw pybind11::value_error("this transport is already used by a communicator");
  return std::move(held);
}

}  // namespace pycomm
