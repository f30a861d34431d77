#include "py_work.h"

#include "errors.h"
#include "gil.h"

namespace py = pybind11;

namespace pycomm {

void PyWork::finish() {
  if (finished.load(std::memory_order_acquire)) return;
  std::vector<std::unique_ptr<HostBuffer>> drop_buffers;
  std::unique_ptr<DeviceStaging> drop_staging;
  // Nothing under the lock needs the GIL, so taking it with the GIL held
  // cannot deadlock; only a GPU buffer's copy is worth letting Python run.
  auto settle = [&] {
    std::lock_guard<std::mutex> lk(finish_mu);
    if (finished.load(std::memory_order_relaxed)) return;
    if (staging && !work->failed()) staging->deliver(op->received);
    drop_buffers = std::move(buffers);
    drop_staging = std::move(staging);
    held.reset();
    finished.store(true, std::memory_order_release);
  };
  if (staged) {
    without_gil(settle);
  } else {
    settle();
  }
  py::object drop_device = std::move(device_buffer);
}

bool PyWork::wait(py::object timeout) {
  double t = timeout.is_none() ? -1.0 : timeout.cast<double>();
  const bool done = without_gil([&] { return op ? engine->wait(*op, t) : work->wait(t); });
  if (!done)
    throw CommError(ErrorKind::kTimeout, strprintf("Work.wait timed out after %.3g s; the op is still running", t));
  finish();
  if (work->failed()) work->rethrow();
  return true;
}

py::object PyWork::exception() {
  if (!is_completed() || !work->failed()) return py::none();
  return error_class(work->error_kind())(work->error_message());
}

bool PyWork::is_completed() {
  if (op && !work->is_completed()) without_gil([&] { engine->wait(*op, 0); });
  if (!work->is_completed()) return false;
  finish();
  return true;
}

py::object PyWork::source() {
  if (!op || op->send || !work->is_completed() || work->failed()) return py::none();
  return py::int_(op->source);
}

py::object PyWork::count() {
  if (!op || !work->is_completed() || work->failed()) return py::none();
  return py::int_((op->send ? op->bytes : op->received) / elem);
}

void bind_work(py::module_& m) {
  py::class_<PyWork>(m, "Work")
      .def("wait", &PyWork::wait, py::arg("timeout") = py::none())
      .def("is_completed", &PyWork::is_completed)
      .def("exception", &PyWork::exception)
      .def_property_readonly("source", &PyWork::source)
      .def_property_readonly("count", &PyWork::count);
}

}  // namespace pycomm
