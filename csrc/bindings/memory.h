// pycomm.Memory: host memory given by address, element count and dtype, for
// callers whose buffers pycomm cannot otherwise read cheaply (a framework's
// tensors: torch's `data_ptr()` costs 0.08 us, its numpy view 0.7). The
// caller vouches for the memory, as with mpi4py's `MPI.buffer.fromaddress`:
// it must stay valid (and writable unless readonly) while an op uses it;
// `keep` holds an object alive for as long as the Memory is.
//
// A plain CPython type with a vectorcall constructor (about 0.1 us), read
// by HostBuffer from its struct; it also exports the buffer protocol for
// dtypes the protocol can name (numpy.asarray(m) is a view).
#pragma once

#include <pybind11/pybind11.h>

#include <cstddef>

#include "../common/dtype.h"

namespace pycomm {

struct MemoryView {
  void* data;
  size_t count;
  DType dtype;
  bool readonly;
};

// Adds the type to `m` as "Memory".
void bind_memory(pybind11::module_& m);

// Whether obj is a pycomm.Memory; if so and `view` is given, what it describes.
bool memory_view(PyObject* obj, MemoryView* view);

}  // namespace pycomm
