#include "errors.h"

namespace py = pybind11;

namespace pycomm {

py::object error_class(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kValue: return py::reinterpret_borrow<py::object>(PyExc_ValueError);
    case ErrorKind::kType: return py::reinterpret_borrow<py::object>(PyExc_TypeError);
    default: break;
  }
  py::module_ errors = py::module_::import("pycomm.errors");
  switch (kind) {
    case ErrorKind::kTimeout: return errors.attr("TimeoutError");
    case ErrorKind::kMismatch: return errors.attr("MismatchError");
    case ErrorKind::kPeerLost: return errors.attr("PeerLostError");
    case ErrorKind::kAborted: return errors.attr("AbortedError");
    default: return errors.attr("CommError");
  }
}

void set_comm_error(const CommError& e) {
  if (e.kind() != ErrorKind::kValue && e.kind() != ErrorKind::kType) {
    try {  // the flight records as the failure reaches Python (pycomm/flight.py)
      py::module_::import("pycomm.flight").attr("on_error")();
    } catch (py::error_already_set& dump_error) {
      dump_error.discard_as_unraisable("pycomm: writing the flight records");
    }
  }
  py::object cls = error_class(e.kind());
  PyErr_SetObject(cls.ptr(), py::str(e.what()).ptr());
}

void register_error_translator() {
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const CommError& e) {
      set_comm_error(e);
    }
  });
}

}  // namespace pycomm
