// The communicator core: ops of one communicator complete in submission
// order. Asynchronous ops run on a worker thread (started on first use); a
// blocking op with nothing queued runs on the calling thread, because handing
// it to another thread costs more than a small collective itself. Every op
// carries a deadline; the first failure is sent to every peer and leaves the
// communicator unusable (its protocol state is unknown), like NCCL.
#pragma once

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "../collectives/collectives.h"
#include "../collectives/device.h"
#include "../p2p/p2p_engine.h"
#include "../transport/transport.h"
#include "flight_recorder.h"
#include "work.h"

namespace pycomm {

// One call: the operation (its row in operation.h says what the OpArgs
// fields mean for it) and what every call carries.
struct CollArgs : OpArgs {
  Coll coll = Coll::kBarrier;
  DType dtype = DType::kUInt8;
  RedOp op = RedOp::kSum;
  double timeout_s = 0;  // > 0
  // int8 rows: stochastic rounding without a seed takes the op's sequence
  // number (every path: host, GPU on one host, GPU staged).
  bool seed_from_seq = false;
  // GPU buffers (in/out are device pointers): run by DeviceState after
  // `stream` (the caller's cudaStream_t; nullptr: the legacy default stream).
  bool device = false;
  void* stream = nullptr;
};

class Communicator {
 public:
  // p2p_transport: the point-to-point engine's own links (null: none).
  // flight_entries: the flight recorder's size (flight_recorder.h; 0: off).
  Communicator(std::unique_ptr<Transport> transport, const Tuning& tuning,
               std::unique_ptr<Transport> p2p_transport = nullptr, size_t p2p_eager_bytes = 32 << 10,
               size_t flight_entries = 0);
  // (p2p_transport over shared memory: its peers' memory is read directly.)
  ~Communicator();

  int rank() const { return rank_; }
  int size() const { return size_; }
  const char* transport_name() const { return transport_->name(); }
  uint64_t ops_submitted();

  // Blocking (async=false): returns a completed Work when the op is done, throwing its error.
  // Async: returns at once; the Work reports completion and errors. For GPU
  // buffers "done" means queued: the caller's stream is ordered after the op
  // (device.h), as with NCCL.
  std::shared_ptr<Work> submit(const CollArgs& args, bool async);

  // Point-to-point sends and receives (p2p_engine.h), independent of the
  // collectives' queue; null without a p2p transport. Shared: a Work may
  // outlive the communicator.
  std::shared_ptr<P2PEngine> p2p() const { return p2p_; }

  // How GPU buffers travel (after the first GPU op).
  std::string device_path();

  // The peers whose processes are gone by this rank's transport (for shrink;
  // the transport's Transport::peer_alive).
  std::vector<int> lost_peers();

  // The flight recorder's entries, oldest first (empty when it is off).
  std::vector<FlightEntry> flight_record() const { return flight_.snapshot(); }

  // Waits for queued ops, stops the worker and releases the transport.
  void close();
  // Fails the running and queued ops and tells every peer to stop.
  void abort(const std::string& reason);

 private:
  struct Op {
    CollArgs args;
    OpStamp stamp;  // what every rank must agree on, with the op's sequence number
    std::shared_ptr<Work> work;
    bool inline_run = false;  // run by submit() on the caller's thread
  };
  OpStamp stamp_of(const CollArgs& a, uint64_t seq) const;
  void execute(Op& op);  // runs one op, records its outcome in op.work
  void worker_loop();
  void fail_broken(Op& op);

  const int rank_, size_;
  std::unique_ptr<Transport> transport_;
  std::shared_ptr<P2PEngine> p2p_;
  Tuning tuning_;
  FlightRecorder flight_;
  Scratch scratch_;
  PeerProgress progress_;
  std::mutex device_mu_;
  std::unique_ptr<DeviceState> device_;  // created by the first GPU op

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Op> queue_;
  bool running_ = false;  // an op is executing (worker or inline)
  bool stopping_ = false;
  bool closed_ = false;
  uint64_t next_seq_ = 0;
  std::thread worker_;

  // Set by the first failure; later ops fail fast with it.
  std::mutex broken_mu_;
  bool broken_ = false;
  std::string broken_msg_;
};

}  // namespace pycomm
