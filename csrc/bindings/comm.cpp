// pycomm._C.Communicator: the native communicator as Python sees it. Its
// arguments are checked here (arg_checks.h), before anything is sent, and
// raise TypeError or ValueError; the GIL is released for the whole data path.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <vector>

#include "../comm/communicator.h"
#include "../cuda/cuda_kernels.h"
#include "../cuda/device_memory.h"
#include "../cuda/runtime.h"
#include "../kernels/quantize_int8.h"
#include "../transport/factory.h"
#include "arg_checks.h"
#include "buffer.h"
#include "device_staging.h"
#include "errors.h"
#include "fast_allreduce.h"
#include "fast_p2p.h"
#include "gil.h"
#include "memory.h"
#include "py_work.h"
#include "transport_capsule.h"

namespace py = pybind11;

namespace pycomm {
namespace {

// The flight recorder's default size (PYCOMM_FLIGHT_RECORDER; 0: off).
constexpr size_t kFlightEntries = 2000;

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
    // Every option as a string (bytes as they are: the TCP token), for the
    // transport factory and the tuning.
    Options o;
    for (auto item : opts) {
      const std::string key = item.first.cast<std::string>();
      py::handle v = item.second;
      if (key == "mpi_transport" || key == "mpi_p2p_transport") continue;  // capsules
      if (py::isinstance<py::bytes>(v)) o.set(key, v.cast<std::string>());
      else if (py::isinstance<py::bool_>(v)) o.set(key, v.cast<bool>() ? "1" : "0");
      else o.set(key, py::str(v).cast<std::string>());
    }
    Tuning tuning = Tuning::from(o, size);
    // Two sets of links: the collectives', and the point-to-point engine's
    // (p2p_engine.h), so that neither waits behind the other. p2p=0: none.
    const bool p2p = o.get_int("p2p", 1) != 0;
    std::unique_ptr<Transport> tr, p2p_tr;
    if (transport == "mpi") {  // built by pycomm._mpi over the program's MPI communicator
      auto take = [&](const char* key) {
        std::unique_ptr<Transport> t = unwrap_transport(opts[key]);
        if (t->rank() != rank || t->size() != size)
          throw py::value_error(strprintf("the MPI transport is rank %d of %d, the communicator rank %d of %d",
                                          t->rank(), t->size(), rank, size));
        return t;
      };
      if (!opts.contains("mpi_transport"))
        throw py::value_error("transport 'mpi' needs opts['mpi_transport'] (see Communicator.from_mpi)");
      tr = take("mpi_transport");
      if (p2p && opts.contains("mpi_p2p_transport")) p2p_tr = take("mpi_p2p_transport");
    } else {
      without_gil([&] {
        tr = make_transport(transport, rank, size, allgather, o);
        Options p2p_o = o;  // the engine reads peers' memory itself (its rendezvous), not through the transport
        p2p_o.set("shm_cma_bytes", "0");
        if (p2p) p2p_tr = make_transport(transport, rank, size, allgather, p2p_o);
      });
    }
    tuning_ = tuning;
    comm_ = std::make_unique<Communicator>(std::move(tr), tuning, std::move(p2p_tr),
                                           o.get_size("p2p_eager_bytes", 32 << 10),
                                           o.get_size("flight_recorder", kFlightEntries));
  }

  uint64_t ops_submitted() { return comm_->ops_submitted(); }
  int rank() const { return comm_->rank(); }
  int size() const { return comm_->size(); }
  std::string transport() const { return comm_->transport_name(); }

  // Every uncompressed operation of the table (operation.h) on host
  // buffers: the row says which buffers this rank passes and how big they
  // are; everything is checked here, before anything is sent. x or out may
  // be None where this rank has no such buffer (a non-root's gather output,
  // scatter input); out None where the row allows it means in place.
  // `coll`: the row's code (_C.operations()[name]["code"]). Two signatures
  // over one body: the even forms' has fewer arguments, because converting
  // each costs time on the small ops whose latency matters most.
  py::object collective(int coll, py::handle x, py::handle out, int op, int root, bool async_op, double timeout) {
    return collective_v(coll, x, out, op, root, py::none(), py::none(), async_op, timeout);
  }
  py::object collective_v(int coll, py::handle x, py::handle out, int op, int root, py::handle counts,
                          py::handle recv_counts, bool async_op, double timeout) {
    if (coll < 1 || coll >= kNumColls || op_info(static_cast<Coll>(coll)).int8)
      throw py::value_error(strprintf("unknown operation code %d", coll));
    const OpInfo* info = &op_info(static_cast<Coll>(coll));
    const std::string name = info->name;
    const int r = rank();
    CollArgs a;
    a.coll = info->coll;
    a.timeout_s = checks::timeout(timeout);
    std::shared_ptr<Held> held = root_and_counts(*info, a, root, counts, recv_counts);
    const bool has_in = extent_present(info->in, a, r), has_out = extent_present(info->out, a, r);
    const bool in_place = has_out && out.is_none() && info->in_place;
    std::unique_ptr<HostBuffer> in, dst;
    if (has_in) {
      if (x.is_none()) throw py::value_error(name + " needs x on this rank");
      in = std::make_unique<HostBuffer>(x, "x", in_place);
    }
    if (has_out && !in_place) {
      if (out.is_none()) throw py::value_error(name + " needs out on this rank");
      dst = std::make_unique<HostBuffer>(out, "out", true);
      if (in) checks::same_type(*in, *dst);
    }
    a.dtype = in ? in->dtype() : dst ? dst->dtype() : DType::kUInt8;
    a.op = info->reduces ? checks::reduce_op(op, a.dtype) : RedOp::kSum;
    if (!info->counts) a.count = count_of(*info, in.get(), dst.get());
    a.in = in ? in->data() : nullptr;
    a.out = dst ? dst->data() : in_place ? in->data() : nullptr;
    check_extent(*info, info->in, a, in.get(), "x");
    check_extent(*info, info->out, a, dst.get(), "out");
    if (in && dst && !info->in_place && !aliased_ok(*info, a, *in, *dst)) checks::no_overlap(*in, *dst);
    std::vector<std::unique_ptr<HostBuffer>> keep;
    if (in) keep.push_back(std::move(in));
    if (dst) keep.push_back(std::move(dst));
    return submit(a, async_op, std::move(keep), std::move(held));
  }

  // compress="int8": float32/float16/bfloat16 in, float32 out. Residuals
  // are float32 arrays (error feedback) or None; seed None = the op's number.
  py::object allreduce_int8(py::handle x, py::handle out, int op, size_t block_size,
                            bool stochastic, py::handle seed, py::handle worker_residual,
                            py::handle owner_residual, bool async_op, double timeout) {
    auto in = std::make_unique<HostBuffer>(x, "x", out.is_none());
    checks::int8_input(*in);
    std::unique_ptr<HostBuffer> dst;
    if (!out.is_none()) {
      dst = std::make_unique<HostBuffer>(out, "out", true);
      checks::buffer(*dst, DType::kFloat32, in->count(), "out");
      if (dst->data() != in->data()) checks::no_overlap(*in, *dst);
    } else if (in->dtype() != DType::kFloat32) {
      throw py::type_error(std::string("compressed allreduce of ") + dtype_name(in->dtype()) +
                           " needs out (float32): the result is float32");
    }
    CollArgs a = args(Coll::kAllreduceInt8, *in, checks::int8_op(op), timeout);
    a.in = in->data();
    a.out = dst ? dst->data() : in->data();
    a.count = in->count();
    auto keep = int8_args(a, block_size, stochastic, seed, worker_residual, owner_residual,
                          in->count(), allreduce_int8_owned(in->count(), size(), rank(), block_size));
    keep.push_back(std::move(in));
    if (dst) keep.push_back(std::move(dst));
    return submit(a, async_op, std::move(keep));
  }

  py::object reduce_scatter_int8(py::handle x, py::handle out, int op, size_t block_size,
                                 bool stochastic, py::handle seed, py::handle worker_residual,
                                 bool async_op, double timeout) {
    auto in = std::make_unique<HostBuffer>(x, "x", false);
    checks::int8_input(*in);
    auto dst = std::make_unique<HostBuffer>(out, "out", true);
    if (in->count() != dst->count() * size())
      throw py::value_error(strprintf("reduce_scatter needs x.size == comm.size * out.size: x has "
                                      "%zu elements, out %zu, comm.size is %d",
                                      in->count(), dst->count(), size()));
    checks::buffer(*dst, DType::kFloat32, dst->count(), "out");
    const auto* own = static_cast<const uint8_t*>(in->data()) + rank() * dst->nbytes();
    if (!(in->dtype() == DType::kFloat32 && dst->data() == own)) checks::no_overlap(*in, *dst);
    CollArgs a = args(Coll::kReduceScatterInt8, *in, checks::int8_op(op), timeout);
    a.in = in->data();
    a.out = dst->data();
    a.count = dst->count();
    auto keep = int8_args(a, block_size, stochastic, seed, worker_residual, py::none(),
                          in->count(), 0);
    keep.push_back(std::move(in));
    keep.push_back(std::move(dst));
    return submit(a, async_op, std::move(keep));
  }

  // compress="int8": x float32/float16/bfloat16, out (size * x elements)
  // float32 or x's dtype; seed None = the op's number.
  py::object allgather_int8(py::handle x, py::handle out, size_t block_size, bool stochastic,
                            py::handle seed, bool async_op, double timeout) {
    auto in = std::make_unique<HostBuffer>(x, "x", false);
    checks::int8_input(*in);
    auto dst = std::make_unique<HostBuffer>(out, "out", true);
    if (dst->dtype() != DType::kFloat32 && dst->dtype() != in->dtype())
      throw py::type_error(std::string("out must be float32 or x's dtype (") + dtype_name(in->dtype()) +
                           "), got " + dtype_name(dst->dtype()));
    if (dst->count() != in->count() * size())
      throw py::value_error(strprintf("allgather needs out.size == comm.size * x.size: x has %zu "
                                      "elements, out %zu, comm.size is %d",
                                      in->count(), dst->count(), size()));
    checks::aligned(*dst, "out");
    // x may be this rank's part of out (FSDP's in-place form): each piece is
    // quantized before its dequantized values land on it.
    const auto* own = static_cast<const uint8_t*>(dst->data()) + rank() * in->nbytes();
    if (!(dst->dtype() == in->dtype() && in->data() == own)) checks::no_overlap(*in, *dst);
    CollArgs a = args(Coll::kAllgatherInt8, *in, RedOp::kSum, timeout);
    a.in = in->data();
    a.out = dst->data();
    a.count = in->count();
    int8_args(a, block_size, stochastic, seed, py::none(), py::none(), 0, 0);
    a.int8.out_dtype = dst->dtype();
    std::vector<std::unique_ptr<HostBuffer>> keep;
    keep.push_back(std::move(in));
    keep.push_back(std::move(dst));
    return submit(a, async_op, std::move(keep));
  }

  // GPU buffers, described by the Python layer (pycomm/device.py), which
  // checked them: device pointers, element count per collectives.h, dtype and
  // op codes, the caller's stream. The caller keeps the tensors alive.
  py::object device_op(const std::string& coll, uintptr_t in, uintptr_t out, size_t count, int dtype,
                       int op, int root, py::handle counts, uintptr_t stream, bool async_op, double timeout) {
    CollArgs a = device_args(in, out, count, stream, timeout);
    if (dtype < 0 || dtype >= kNumDTypes) throw py::value_error(strprintf("unknown dtype code %d", dtype));
    const OpInfo* info = find_op(coll);
    if (!info || !info->ipc) throw py::value_error("no GPU path for " + coll);
    a.coll = info->coll;
    a.dtype = static_cast<DType>(dtype);
    a.op = info->reduces ? checks::reduce_op(op, a.dtype) : RedOp::kSum;
    std::shared_ptr<Held> held = root_and_counts(*info, a, root, counts, py::none());
    checks::device_pointers(a);
    py::object w = submit(a, async_op, {});
    if (async_op) w.cast<PyWork&>().held = std::move(held);
    return w;
  }

  // compress="int8" of GPU buffers: x (dtype) in, out float32 on the same GPU.
  // worker / owner: device pointers of the error-feedback residuals (0: none).
  py::object device_allreduce_int8(uintptr_t in, uintptr_t out, size_t count, int dtype, int op,
                                   size_t block_size, bool stochastic, py::handle seed,
                                   uintptr_t worker, uintptr_t owner, uintptr_t stream,
                                   bool async_op, double timeout) {
    CollArgs a = device_args(in, out, count, stream, timeout);
    const DType d = static_cast<DType>(dtype);
    if (d != DType::kFloat32 && d != DType::kFloat16 && d != DType::kBFloat16)
      throw py::type_error(std::string("compress='int8' needs float32, float16 or bfloat16 input, got ") +
                           (dtype >= 0 && dtype < kNumDTypes ? dtype_name(d) : "an unknown dtype"));
    if (size() > cuda::kMaxReduceSources)
      throw py::value_error(strprintf("compressed allreduce of GPU buffers takes at most %d ranks for now",
                                      cuda::kMaxReduceSources));
    a.coll = Coll::kAllreduceInt8;
    a.dtype = d;
    a.op = checks::int8_op(op);
    int8_args(a, block_size, stochastic, seed, py::none(), py::none(), 0, 0);
    a.int8.worker_residual = reinterpret_cast<float*>(worker);
    a.int8.owner_residual = reinterpret_cast<float*>(owner);
    checks::device_pointers(a);
    if (count != 0 && ((worker && cuda::device_of(a.int8.worker_residual) < 0) ||
                       (owner && cuda::device_of(a.int8.owner_residual) < 0)))
      throw py::value_error("error-feedback residuals of GPU buffers must be in GPU memory");
    return submit(a, async_op, {});
  }

  // Point-to-point. One op: checked, posted, and for a blocking call waited
  // for without returning to Python in between (the latency of small
  // messages is mostly this path). Returns the Work (async), or None
  // (blocking send), or the source rank (blocking receive).
  py::object p2p_one(bool send, py::handle x, int peer, int tag, bool allow_shorter, bool async_op,
                     double timeout) {
    std::unique_ptr<PyWork> pw = p2p_op(send, x, peer, tag, allow_shorter, timeout);
    std::shared_ptr<P2POp> op = pw->op;
    without_gil([&] {
      pw->engine->post({op});
      if (!async_op) pw->engine->wait(*op, -1);  // ends by the op's own deadline
    });
    if (async_op) return py::cast(std::move(pw));
    pw->finish();
    if (op->work->failed()) op->work->rethrow();
    return send ? py::none() : py::object(py::int_(op->source));
  }

  // A group: every (send, x, peer, tag, allow_shorter, timeout) of `ops`
  // checked, then all posted at once (none waits for another); their Works.
  py::list p2p_group(py::sequence ops) {
    std::vector<std::shared_ptr<P2POp>> posted;
    std::vector<std::unique_ptr<PyWork>> works;
    for (py::handle item : ops) {
      auto t = item.cast<py::tuple>();
      works.push_back(p2p_op(t[0].cast<bool>(), t[1], t[2].cast<int>(), t[3].cast<int>(), t[4].cast<bool>(),
                             t[5].cast<double>()));
      posted.push_back(works.back()->op);
    }
    if (!works.empty()) without_gil([&] { works.front()->engine->post(posted); });
    py::list out;
    for (auto& w : works) out.append(py::cast(std::move(w)));
    return out;
  }

  std::string device_path() { return comm_->device_path(); }

  std::vector<int> lost_peers() { return without_gil([&] { return comm_->lost_peers(); }); }

  // The flight recorder's entries, oldest first: dicts of plain values; the
  // collectives', then the point-to-point engine's ("p2p": True).
  py::list flight_record() const {
    py::list out;
    for (const FlightEntry& e : comm_->flight_record()) out.append(flight_entry(e));
    if (std::shared_ptr<P2PEngine> p2p = comm_->p2p())
      for (const FlightEntry& e : p2p->flight_record()) out.append(flight_entry(e));
    return out;
  }

  // For PYCOMM_DEBUG: what an op of `coll` moving `bytes` per rank block runs.
  std::string algorithm(const std::string& coll, size_t bytes) const {
    const OpInfo* info = find_op(coll);
    if (!info) throw py::value_error("unknown operation " + coll);
    return info->algorithm(bytes, size(), tuning_);
  }

  size_t int8_owned(size_t count, size_t block_size) const {
    checks::block_size(block_size);
    return allreduce_int8_owned(count, size(), rank(), block_size);
  }

  void close() {
    without_gil([&] { comm_->close(); });
  }
  void abort(const std::string& reason) {
    without_gil([&] { comm_->abort(reason); });
  }

 private:
  static py::dict flight_entry(const FlightEntry& e) {
    const OpStamp& s = e.stamp;
    const bool p2p = e.kind != FlightEntry::Kind::kCollective;
    py::dict d;
    d["seq"] = s.seq;
    d["p2p"] = p2p;
    d["operation"] = p2p ? (e.kind == FlightEntry::Kind::kSend ? "send" : "recv") : op_info(s.coll).name;
    d["dtype"] = dtype_name(s.dtype);
    d["count"] = s.count;
    d["op"] = !p2p && op_info(s.coll).reduces ? py::object(py::str(redop_name(s.op))) : py::object(py::none());
    d["root"] = !p2p && op_info(s.coll).rooted ? py::object(py::int_(s.root)) : py::object(py::none());
    d["block_size"] = !p2p && op_info(s.coll).int8 ? py::object(py::int_(s.block_size)) : py::object(py::none());
    d["peer"] = p2p ? py::object(py::int_(e.peer)) : py::object(py::none());
    d["tag"] = p2p ? py::object(py::int_(e.tag)) : py::object(py::none());
    d["device"] = s.device;
    d["state"] = flight_state_name(e.state);
    d["queued_ns"] = e.queued_ns;
    d["started_ns"] = e.started_ns ? py::object(py::int_(e.started_ns)) : py::object(py::none());
    d["ended_ns"] = e.ended_ns ? py::object(py::int_(e.ended_ns)) : py::object(py::none());
    d["error"] = e.error.empty() ? py::object(py::none()) : py::object(py::str(e.error));
    return d;
  }

  std::unique_ptr<PyWork> p2p_op(bool send, py::handle x, int peer, int tag, bool allow_shorter, double timeout) {
    std::shared_ptr<P2PEngine> engine = comm_->p2p();
    if (!engine) throw py::value_error("this communicator has no point-to-point links (made with p2p=0)");
    timeout = checks::timeout(timeout);
    if (peer < (send ? 0 : kAnySource) || peer >= size())
      throw py::value_error(strprintf("%s %d is not a rank of this communicator (size %d)", send ? "dst" : "src",
                                      peer, size()));
    auto op = std::make_shared<P2POp>();
    auto pw = std::make_unique<PyWork>();
    op->send = send;
    op->peer = peer;
    op->tag = tag;
    op->allow_shorter = allow_shorter;
    // numpy and Memory first: a failed attribute lookup costs 0.3 us of an 8 B send.
    const bool host = py::detail::npy_api::get().PyArray_Check_(x.ptr()) || memory_view(x.ptr(), nullptr);
    if (!host && py::hasattr(x, "__pycomm_device__")) {  // pycomm/device.py's DeviceBuffer
      if (!cuda::built()) throw py::type_error("GPU buffers need pycomm built with CUDA (this build has none)");
      const DType dtype = static_cast<DType>(x.attr("dtype").cast<int>());
      const size_t bytes = x.attr("count").cast<size_t>() * dtype_size(dtype);
      void* dev = reinterpret_cast<void*>(x.attr("ptr").cast<uintptr_t>());
      void* stream = reinterpret_cast<void*>(x.attr("stream").cast<uintptr_t>());
      pw->staging = without_gil([&] { return std::make_unique<DeviceStaging>(dev, bytes, stream, send); });
      pw->staged = true;
      op->buf = pw->staging->host();
      op->bytes = bytes;
      pw->device_buffer = py::reinterpret_borrow<py::object>(x);
      pw->elem = dtype_size(dtype);
      op->dtype = dtype;
    } else {
      auto buf = std::make_unique<HostBuffer>(x, "x", !send);
      op->buf = static_cast<uint8_t*>(buf->data());
      op->bytes = buf->nbytes();
      pw->elem = dtype_size(buf->dtype());
      op->dtype = buf->dtype();
      pw->buffers.push_back(std::move(buf));
    }
    op->deadline = Deadline::after(timeout);  // after a GPU send's copy out
    pw->work = op->work;
    pw->engine = std::move(engine);
    pw->op = std::move(op);
    return pw;
  }
  // The part of a GPU op's arguments every GPU op has.
  static CollArgs device_args(uintptr_t in, uintptr_t out, size_t count, uintptr_t stream,
                              double timeout) {
    if (!cuda::built())
      throw py::type_error("GPU buffers need pycomm built with CUDA (this build has none)");
    CollArgs a;
    a.in = reinterpret_cast<const void*>(in);
    a.out = reinterpret_cast<void*>(out);
    a.count = count;
    a.device = true;
    a.stream = reinterpret_cast<void*>(stream);
    a.timeout_s = checks::timeout(timeout);
    return a;
  }
  // Fills a.int8; returns the residual buffers to keep alive with the op.
  std::vector<std::unique_ptr<HostBuffer>> int8_args(CollArgs& a, size_t block_size, bool stochastic,
                                                     py::handle seed, py::handle worker,
                                                     py::handle owner, size_t worker_count,
                                                     size_t owner_count) {
    checks::block_size(block_size);
    a.int8.block_size = block_size;
    a.int8.stochastic = stochastic;
    a.seed_from_seq = seed.is_none();
    if (!seed.is_none()) a.int8.seed = seed.cast<uint64_t>();
    std::vector<std::unique_ptr<HostBuffer>> keep;
    if (!worker.is_none()) {
      keep.push_back(std::make_unique<HostBuffer>(worker, "error feedback (worker)", true));
      checks::buffer(*keep.back(), DType::kFloat32, worker_count, "error feedback (worker)");
      a.int8.worker_residual = static_cast<float*>(keep.back()->data());
    }
    if (!owner.is_none()) {
      keep.push_back(std::make_unique<HostBuffer>(owner, "error feedback (owner)", true));
      checks::buffer(*keep.back(), DType::kFloat32, owner_count, "error feedback (owner)");
      a.int8.owner_residual = static_cast<float*>(keep.back()->data());
    }
    return keep;
  }
  static CollArgs args(Coll coll, const HostBuffer& b, RedOp op, double timeout) {
    CollArgs a;
    a.coll = coll;
    a.dtype = b.dtype();
    a.op = op;
    a.timeout_s = checks::timeout(timeout);
    return a;
  }
  py::object submit(const CollArgs& a, bool async_op, std::unique_ptr<HostBuffer> b1,
                    std::unique_ptr<HostBuffer> b2) {
    std::vector<std::unique_ptr<HostBuffer>> keep;
    if (b1) keep.push_back(std::move(b1));
    if (b2) keep.push_back(std::move(b2));
    return submit(a, async_op, std::move(keep));
  }
  // The row's root (checked) and counts (parsed, owned by the returned Held
  // until the op is done) into `a`.
  std::shared_ptr<Held> root_and_counts(const OpInfo& info, CollArgs& a, int root, py::handle counts,
                                        py::handle recv_counts) const {
    if (info.rooted) {
      if (root < 0 || root >= size())
        throw py::value_error(strprintf("root %d is not a rank of this communicator (size %d)", root, size()));
      a.root = root;
    }
    if (!info.counts) {
      if (!counts.is_none() || !recv_counts.is_none()) throw py::value_error(std::string(info.name) + " takes no counts");
      return nullptr;
    }
    auto held = std::make_shared<Held>();
    held->counts = count_list(counts, "counts");
    a.counts = held->counts.data();
    if (info.coll == Coll::kAlltoallV) {
      const int r = rank();
      held->recv_counts = count_list(recv_counts, "recv_counts");
      a.recv_counts = held->recv_counts.data();
      if (a.counts[r] != a.recv_counts[r])
        throw py::value_error(strprintf("send_counts[%d] is %llu but recv_counts[%d] is %llu: what a rank "
                                        "sends itself it receives", r, (unsigned long long)a.counts[r], r,
                                        (unsigned long long)a.recv_counts[r]));
    }
    return held;
  }
  // `size` element counts >= 0 (a list, tuple or integer array).
  std::vector<uint64_t> count_list(py::handle h, const char* what) const {
    if (h.is_none()) throw py::value_error(std::string("the uneven form needs ") + what);
    if (!PySequence_Check(h.ptr()) || py::isinstance<py::str>(h) || py::isinstance<py::bytes>(h))
      throw py::type_error(std::string(what) + " must be a sequence of ints, not " +
                           std::string(py::str(py::type::handle_of(h).attr("__name__"))));
    py::sequence seq = py::reinterpret_borrow<py::sequence>(h);
    if (static_cast<int>(seq.size()) != size())
      throw py::value_error(strprintf("%s has %zu entries; the communicator has %d ranks", what, seq.size(), size()));
    std::vector<uint64_t> out;
    for (py::handle item : seq) {
      if (py::isinstance<py::bool_>(item) || !PyIndex_Check(item.ptr()))
        throw py::type_error(std::string(what) + " must hold ints");
      const long long v = py::reinterpret_steal<py::int_>(PyNumber_Index(item.ptr())).cast<long long>();
      if (v < 0) throw py::value_error(strprintf("%s must be >= 0, got %lld", what, v));
      out.push_back(static_cast<uint64_t>(v));
    }
    return out;
  }
  // The row's `count` from whichever buffer this rank has that defines it.
  size_t count_of(const OpInfo& info, const HostBuffer* in, const HostBuffer* out) const {
    auto single = [](Extent e) { return e == Extent::kCount || e == Extent::kCountAtRoot; };
    auto ranks = [](Extent e) { return e == Extent::kRanks || e == Extent::kRanksAtRoot; };
    if (in && single(info.in)) return in->count();
    if (out && single(info.out)) return out->count();
    const HostBuffer* b = in && ranks(info.in) ? in : out && ranks(info.out) ? out : nullptr;
    if (!b) return 0;
    if (b->count() % size())
      throw py::value_error(strprintf("%s needs %s.size divisible by comm.size (%d), got %zu", info.name,
                                      b == in ? "x" : "out", size(), b->count()));
    return b->count() / size();
  }
  void check_extent(const OpInfo& info, Extent e, const OpArgs& a, const HostBuffer* b, const char* what) const {
    if (!b) return;
    const size_t want = extent_elems(e, a, size(), rank());
    if (b->count() != want)
      throw py::value_error(strprintf("%s on %d ranks needs %s of %zu elements here, got %zu", info.name, size(),
                                      what, want, b->count()));
  }
  // x and out may share memory only as the row's in-place forms: this
  // rank's own block of the bigger buffer is exactly the smaller one.
  bool aliased_ok(const OpInfo& info, const CollArgs& a, const HostBuffer& x, const HostBuffer& out) const {
    auto whole = [](Extent e) { return e == Extent::kRanks || e == Extent::kRanksAtRoot || e == Extent::kSum; };
    auto block = [](Extent e) { return e == Extent::kCount || e == Extent::kMine; };
    const bool x_whole = whole(info.in) && block(info.out), out_whole = block(info.in) && whole(info.out);
    if (!x_whole && !out_whole) return false;
    const HostBuffer& big = x_whole ? x : out;
    const HostBuffer& small = x_whole ? out : x;
    const size_t at = info.counts ? prefix_sums(a.counts, size())[rank()] : rank() * a.count;
    return static_cast<const uint8_t*>(small.data()) == static_cast<const uint8_t*>(big.data()) + at * dtype_size(a.dtype);
  }
  py::object submit(const CollArgs& a, bool async_op, std::vector<std::unique_ptr<HostBuffer>> keep,
                    std::shared_ptr<Held> held) {
    py::object w = submit(a, async_op, std::move(keep));
    if (async_op) w.cast<PyWork&>().held = std::move(held);
    return w;
  }
  py::object submit(const CollArgs& a, bool async_op, std::vector<std::unique_ptr<HostBuffer>> keep) {
    std::shared_ptr<Work> work = without_gil([&] { return comm_->submit(a, async_op); });
    if (!async_op) return py::none();
    auto pw = std::make_unique<PyWork>();
    pw->work = std::move(work);
    pw->buffers = std::move(keep);
    return py::cast(std::move(pw));
  }

  Tuning tuning_;
  std::unique_ptr<Communicator> comm_;
};

}  // namespace

void bind_comm(py::module_& m) {
  bind_work(m);
  py::class_<PyComm>(m, "Communicator")
      .def(py::init<int, int, const std::string&, py::function, const py::dict&>(), py::arg("rank"),
           py::arg("size"), py::arg("transport"), py::arg("allgather"), py::arg("options"))
      .def_property_readonly("rank", &PyComm::rank)
      .def_property_readonly("size", &PyComm::size)
      .def_property_readonly("transport", &PyComm::transport)
      .def("collective", &PyComm::collective)
      .def("collective_v", &PyComm::collective_v)
      .def("fast_allreduce",
           [](py::object self, py::object general, py::object owner, double timeout) {
             PyComm* c = &self.cast<PyComm&>();
             return make_fast_allreduce(self, std::move(general), std::move(owner), timeout,
                                        [c](py::handle x, py::handle out, int op, double t) {
                                          c->collective(static_cast<int>(Coll::kAllreduce), x, out, op, 0, false, t);
                                        });
           })
      .def("fast_p2p",
           [](py::object self, bool send, py::object general, py::object owner, double timeout) {
             PyComm* c = &self.cast<PyComm&>();
             return make_fast_p2p(send, self, std::move(general), std::move(owner), timeout,
                                  [c](bool s, py::handle x, int peer, int tag, bool allow_shorter, double t) {
                                    return c->p2p_one(s, x, peer, tag, allow_shorter, false, t);
                                  });
           })
      .def("ops_submitted", [](PyComm& c) { return c.ops_submitted(); })
      .def("allreduce_int8", &PyComm::allreduce_int8)
      .def("reduce_scatter_int8", &PyComm::reduce_scatter_int8)
      .def("allgather_int8", &PyComm::allgather_int8)
      .def("flight_record", &PyComm::flight_record)
      .def("lost_peers", &PyComm::lost_peers)
      .def("int8_owned", &PyComm::int8_owned)
      .def("device_op", &PyComm::device_op)
      .def("device_allreduce_int8", &PyComm::device_allreduce_int8)
      .def("device_path", &PyComm::device_path)
      .def("p2p_one", &PyComm::p2p_one)
      .def("p2p_group", &PyComm::p2p_group)
      .def("algorithm", &PyComm::algorithm)
      .def("close", &PyComm::close)
      .def("abort", &PyComm::abort);
}

}  // namespace pycomm
