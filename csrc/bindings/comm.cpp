// pycomm._C.Communicator: the native communicator as Python sees it. Argument
// checks happen here, before anything is sent, and raise TypeError or
// ValueError; the GIL is released for the whole data path.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <vector>

#include "../comm/communicator.h"
#include "../transport/shm_transport.h"
#include "../transport/tcp_transport.h"
#include "buffer.h"
#include "errors.h"

namespace py = pybind11;

namespace pycomm {
namespace {

// Keeps the Python buffers of an async op exported until it is done. The
// Python Communicator holds each PyWork until it completes.
struct PyWork {
  std::shared_ptr<Work> work;
  std::vector<std::unique_ptr<HostBuffer>> buffers;

  bool wait(py::object timeout) {
    double t = timeout.is_none() ? -1.0 : timeout.cast<double>();
    bool done;
    {
      py::gil_scoped_release nogil;
      done = work->wait(t);
    }
    if (!done)
      throw CommError(ErrorKind::kTimeout,
                      strprintf("Work.wait timed out after %.3g s; the op is still running", t));
    if (work->failed()) work->rethrow();
    buffers.clear();
    return true;
  }
  py::object exception() {
    if (!work->is_completed() || !work->failed()) return py::none();
    return error_class(work->error_kind())(work->error_message());
  }
};

template <typename T>
T option(const py::dict& opts, const char* key, T fallback) {
  return opts.contains(key) ? opts[key].cast<T>() : fallback;
}

class PyComm {
 public:
  PyComm(int rank, int size, const std::string& transport, py::function allgather_fn,
         const py::dict& opts) {
    if (size < 1 || rank < 0 || rank >= size)
      throw py::value_error(strprintf("rank %d is not in [0, %d)", rank, size));
    // The transport blocks while peers connect; it must not hold the GIL then,
    // or a store served by a Python thread in this process could not answer.
    BootstrapAllgather allgather = [&](const std::string& mine) {
      py::gil_scoped_acquire gil;
      py::list all = allgather_fn(py::bytes(mine));
      std::vector<std::string> out;
      for (auto item : all) out.push_back(item.cast<std::string>());
      if (static_cast<int>(out.size()) != size)
        throw CommError(ErrorKind::kComm, "bootstrap allgather returned the wrong number of entries");
      return out;
    };
    Tuning tuning;
    tuning.slice_bytes = option<size_t>(opts, "slice_bytes", tuning.slice_bytes);
    tuning.direct_max_bytes = option<size_t>(opts, "direct_max_bytes", tuning.direct_max_bytes);
    std::unique_ptr<Transport> tr;
    if (transport == "shm") {
      ShmOptions so;
      so.ring_bytes = option<size_t>(opts, "ring_bytes", so.ring_bytes);
      so.spin_us = option<int>(opts, "spin_us", so.spin_us);
      so.local_ranks = option<int>(opts, "local_ranks", so.local_ranks);
      py::gil_scoped_release nogil;
      tr = std::make_unique<ShmTransport>(rank, size, allgather, so);
    } else if (transport == "tcp") {
      TcpOptions to;
      to.bind_addr = option<std::string>(opts, "bind_addr", to.bind_addr);
      to.token = option<std::string>(opts, "token", to.token);
      to.sock_buf_bytes = option<int>(opts, "sock_buf_bytes", to.sock_buf_bytes);
      to.connect_timeout = option<double>(opts, "connect_timeout", to.connect_timeout);
      to.spin_us = option<int>(opts, "spin_us", to.spin_us);
      to.local_ranks = option<int>(opts, "local_ranks", to.local_ranks);
      py::gil_scoped_release nogil;
      tr = std::make_unique<TcpTransport>(rank, size, allgather, to);
    } else {
      throw py::value_error("unknown transport '" + transport + "' (expected shm or tcp)");
    }
    comm_ = std::make_unique<Communicator>(std::move(tr), tuning);
  }

  int rank() const { return comm_->rank(); }
  int size() const { return comm_->size(); }
  std::string transport() const { return comm_->transport_name(); }

  py::object allreduce(py::handle x, py::handle out, int op, bool async_op, double timeout) {
    auto in = std::make_unique<HostBuffer>(x, "x", out.is_none());
    std::unique_ptr<HostBuffer> dst;
    if (!out.is_none()) {
      dst = std::make_unique<HostBuffer>(out, "out", true);
      same_type(*in, *dst);
      if (dst->count() != in->count())
        throw py::value_error(strprintf("out has %zu elements, x has %zu", dst->count(), in->count()));
    }
    CollArgs a = args(Coll::kAllreduce, *in, reduce_op(op, in->dtype()), timeout);
    a.in = in->data();
    a.out = dst ? dst->data() : in->data();
    a.count = in->count();
    return submit(a, async_op, std::move(in), std::move(dst));
  }

  py::object reduce_scatter(py::handle x, py::handle out, int op, bool async_op, double timeout) {
    auto in = std::make_unique<HostBuffer>(x, "x", false);
    auto dst = std::make_unique<HostBuffer>(out, "out", true);
    same_type(*in, *dst);
    if (in->count() != dst->count() * size())
      throw py::value_error(strprintf("reduce_scatter needs x.size == comm.size * out.size: x has "
                                      "%zu elements, out %zu, comm.size is %d",
                                      in->count(), dst->count(), size()));
    CollArgs a = args(Coll::kReduceScatter, *in, reduce_op(op, in->dtype()), timeout);
    a.in = in->data();
    a.out = dst->data();
    a.count = dst->count();
    return submit(a, async_op, std::move(in), std::move(dst));
  }

  py::object allgather(py::handle x, py::handle out, bool async_op, double timeout) {
    auto in = std::make_unique<HostBuffer>(x, "x", false);
    auto dst = std::make_unique<HostBuffer>(out, "out", true);
    same_type(*in, *dst);
    if (dst->count() != in->count() * size())
      throw py::value_error(strprintf("allgather needs out.size == comm.size * x.size: x has %zu "
                                      "elements, out %zu, comm.size is %d",
                                      in->count(), dst->count(), size()));
    CollArgs a = args(Coll::kAllgather, *in, RedOp::kSum, timeout);
    a.in = in->data();
    a.out = dst->data();
    a.count = in->count();
    return submit(a, async_op, std::move(in), std::move(dst));
  }

  py::object broadcast(py::handle x, int root, bool async_op, double timeout) {
    auto buf = std::make_unique<HostBuffer>(x, "x", true);
    if (root < 0 || root >= size())
      throw py::value_error(strprintf("root %d is not a rank of this communicator (size %d)", root, size()));
    CollArgs a = args(Coll::kBroadcast, *buf, RedOp::kSum, timeout);
    a.root = root;
    a.out = buf->data();
    a.count = buf->count();
    return submit(a, async_op, std::move(buf), nullptr);
  }

  py::object barrier(bool async_op, double timeout) {
    CollArgs a;
    a.coll = Coll::kBarrier;
    a.timeout_s = check_timeout(timeout);
    return submit(a, async_op, nullptr, nullptr);
  }

  void close() {
    py::gil_scoped_release nogil;
    comm_->close();
  }
  void abort(const std::string& reason) {
    py::gil_scoped_release nogil;
    comm_->abort(reason);
  }

 private:
  static double check_timeout(double t) {
    if (!(t > 0)) throw py::value_error(strprintf("timeout must be a positive number of seconds, got %g", t));
    return t;
  }
  static RedOp reduce_op(int op, DType dtype) {
    if (op < 0 || op >= kNumRedOps) throw py::value_error(strprintf("unknown reduction op %d", op));
    RedOp r = static_cast<RedOp>(op);
    if (r == RedOp::kAvg && !dtype_is_floating(dtype))
      throw py::value_error(std::string("op avg needs a floating-point dtype, got ") + dtype_name(dtype));
    return r;
  }
  static void same_type(const HostBuffer& x, const HostBuffer& out) {
    if (x.dtype() != out.dtype())
      throw py::type_error(std::string("out has dtype ") + dtype_name(out.dtype()) + ", x has " +
                           dtype_name(x.dtype()));
  }
  static CollArgs args(Coll coll, const HostBuffer& b, RedOp op, double timeout) {
    CollArgs a;
    a.coll = coll;
    a.dtype = b.dtype();
    a.op = op;
    a.timeout_s = check_timeout(timeout);
    return a;
  }
  py::object submit(const CollArgs& a, bool async_op, std::unique_ptr<HostBuffer> b1,
                    std::unique_ptr<HostBuffer> b2) {
    std::shared_ptr<Work> work;
    {
      py::gil_scoped_release nogil;
      work = comm_->submit(a, async_op);
    }
    if (!async_op) return py::none();
    auto pw = std::make_unique<PyWork>();
    pw->work = std::move(work);
    if (b1) pw->buffers.push_back(std::move(b1));
    if (b2) pw->buffers.push_back(std::move(b2));
    return py::cast(std::move(pw));
  }

  std::unique_ptr<Communicator> comm_;
};

}  // namespace

void bind_comm(py::module_& m) {
  py::class_<PyWork>(m, "Work")
      .def("wait", &PyWork::wait, py::arg("timeout") = py::none())
      .def("is_completed", [](PyWork& w) { return w.work->is_completed(); })
      .def("exception", &PyWork::exception);

  py::class_<PyComm>(m, "Communicator")
      .def(py::init<int, int, const std::string&, py::function, const py::dict&>(), py::arg("rank"),
           py::arg("size"), py::arg("transport"), py::arg("allgather"), py::arg("options"))
      .def_property_readonly("rank", &PyComm::rank)
      .def_property_readonly("size", &PyComm::size)
      .def_property_readonly("transport", &PyComm::transport)
      .def("allreduce", &PyComm::allreduce)
      .def("reduce_scatter", &PyComm::reduce_scatter)
      .def("allgather", &PyComm::allgather)
      .def("broadcast", &PyComm::broadcast)
      .def("barrier", &PyComm::barrier)
      .def("close", &PyComm::close)
      .def("abort", &PyComm::abort);
}

}  // namespace pycomm
