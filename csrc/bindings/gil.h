// Native work without the GIL, and the GIL taken back safely as Python exits.
//
// Every binding that lets other Python threads run while it works goes
// through without_gil(), not pybind11's gil_scoped_release: at interpreter
// exit CPython (3.8-3.13) ends a thread that asks for the GIL with
// pthread_exit, and that unwinding out of gil_scoped_release's destructor
// (noexcept) is std::terminate: "terminate called without an active
// exception" and SIGABRT, from any daemon thread (the torch group's
// completion thread, a user's) whose op ends while the job exits. Unwinding
// from anywhere else would run the frames' Py_DECREFs without the GIL. Such
// a thread parks instead, as CPython 3.14 does itself.
#pragma once

#include <Python.h>
#include <unistd.h>

#include <type_traits>

namespace pycomm {

inline void retake_gil(PyThreadState* state) {
#if PY_VERSION_HEX >= 0x030D0000
  const bool exiting = Py_IsFinalizing();
#else
  const bool exiting = _Py_IsFinalizing();
#endif
  if (exiting) {
    for (;;) pause();  // the process ends without this thread
  }
  PyEval_RestoreThread(state);
}

// f() with the GIL released (call with it held); its result or exception.
template <class F>
auto without_gil(F&& f) -> decltype(f()) {
  PyThreadState* state = PyEval_SaveThread();
  try {
    if constexpr (std::is_void_v<decltype(f())>) {
      f();
      retake_gil(state);
    } else {
      auto result = f();
      retake_gil(state);
      return result;
    }
  } catch (...) {
    retake_gil(state);
    throw;
  }
}

}  // namespace pycomm
