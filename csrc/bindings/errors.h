// Native CommError -> the Python classes of pycomm.errors.
#pragma once

#include <pybind11/pybind11.h>

#include "../common/error.h"

namespace pycomm {

pybind11::object error_class(ErrorKind kind);
// Sets the Python error for e (dumping the flight records first, where set).
void set_comm_error(const CommError& e);
void register_error_translator();

}  // namespace pycomm
