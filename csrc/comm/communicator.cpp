#include "communicator.h"

#include <cstring>

#include "../collectives/collectives.h"

namespace pycomm {

Communicator::Communicator(std::unique_ptr<Transport> transport, const Tuning& tuning,
                           std::unique_ptr<Transport> p2p_transport, size_t p2p_eager_bytes,
                           size_t flight_entries)
    : rank_(transport->rank()), size_(transport->size()), transport_(std::move(transport)),
      tuning_(tuning), flight_(flight_entries) {
  if (p2p_transport) {
    const bool same_host = std::strcmp(p2p_transport->name(), "shm") == 0;
    p2p_ = std::make_shared<P2PEngine>(std::move(p2p_transport), p2p_eager_bytes, same_host, flight_entries);
  }
  progress_.heard.assign(size_, 0);
}

Communicator::~Communicator() {
  try {
    close();
  } catch (...) {
  }
  // Never std::terminate from here (a joinable std::thread being destroyed):
  // at interpreter exit close() can fail, and the process is ending anyway.
  if (worker_.joinable()) worker_.detach();
}

uint64_t Communicator::ops_submitted() {
  std::lock_guard<std::mutex> lk(mu_);
  return next_seq_;
}

std::string Communicator::device_path() {
  std::lock_guard<std::mutex> lk(device_mu_);
  return device_ ? device_->describe() : "GPU path not started";
}

OpStamp Communicator::stamp_of(const CollArgs& a, uint64_t seq) const {
  OpStamp stamp;
  stamp.seq = seq;
  stamp.coll = a.coll;
  stamp.dtype = a.dtype;
  stamp.op = a.op;
  stamp.root = a.root;
  stamp.count = stamp_count(op_info(a.coll), a, size_);
  stamp.device = a.device;
  if (op_info(a.coll).int8) stamp.block_size = static_cast<uint32_t>(a.int8.block_size);
  return stamp;
}

void Communicator::execute(Op& op) {
  const CollArgs& a = op.args;
  const OpStamp& stamp = op.stamp;
  const OpInfo& info = op_info(a.coll);
  OpArgs args = a;
  if (info.int8 && a.seed_from_seq) args.int8.seed = op.stamp.seq;
  if (!op.inline_run) flight_.started(stamp.seq);
  {
    std::lock_guard<std::mutex> lk(broken_mu_);
    if (broken_) {
      const std::string msg = strprintf("[rank %d] %s not run: the communicator failed earlier: %s", rank_,
                                        describe(stamp).c_str(), broken_msg_.c_str());
      flight_.ended(stamp.seq, false, msg);
      op.work->fail(ErrorKind::kAborted, msg);
      return;
    }
  }
  try {
    transport_->poll_abort();
    OpContext ctx(*transport_, stamp, Deadline::after(a.timeout_s), tuning_, scratch_, &progress_);
    try {
      if (a.device) {
        std::lock_guard<std::mutex> lk(device_mu_);
        if (!device_) device_ = std::make_unique<DeviceState>(tuning_.single_host);
        if (info.int8) {
          device_->run_int8(ctx, args.in, static_cast<float*>(args.out), args.count, args.int8, a.stream);
        } else {
          device_->run(ctx, args, a.stream);
        }
      } else {
        info.host(ctx, args);
      }
    } catch (const CommError&) {
      throw;
    } catch (const std::exception& e) {  // e.g. from the CUDA layer
      throw CommError(ErrorKind::kComm, e.what());
    }
    flight_.ended(stamp.seq, true, std::string());
    op.work->finish();
  } catch (const CommError& e) {
    // A peer's abort already names its origin; a local failure gets this op's
    // context and is sent to every peer so none of them waits out its timeout.
    std::string msg = e.from_peer() ? e.what()
                                    : strprintf("[rank %d] %s: %s", rank_, describe(stamp).c_str(), e.what());
    if (!e.from_peer() && e.kind() == ErrorKind::kTimeout) {
      const std::string behind = progress_.behind(stamp.seq, rank_);
      if (!behind.empty()) msg += "; not heard from in this op: " + behind;
    }
    {
      std::lock_guard<std::mutex> lk(broken_mu_);
      if (!broken_) {
        broken_ = true;
        broken_msg_ = msg;
      }
    }
    if (!e.from_peer()) transport_->abort_peers(e.kind(), msg);
    flight_.ended(stamp.seq, false, msg);
    op.work->fail(e.kind(), msg);
  }
}

std::shared_ptr<Work> Communicator::submit(const CollArgs& args, bool async) {
  Work local;  // an op run inline: its Work lives in this frame, not on the heap
  std::unique_lock<std::mutex> lk(mu_);
  if (closed_ || stopping_) throw CommError(ErrorKind::kValue, "the communicator is closed");
  const bool inline_run = !async && queue_.empty() && !running_;
  // (Not for a blocking op the worker runs: it may still be notifying the
  // Work's waiters after this frame has returned.)
  Op op{args, stamp_of(args, next_seq_++),
        inline_run ? std::shared_ptr<Work>(std::shared_ptr<Work>(), &local) : std::make_shared<Work>()};
  std::shared_ptr<Work> work = op.work;
  op.inline_run = inline_run;
  flight_.queued(op.stamp, op.inline_run);
  if (op.inline_run) {
    running_ = true;  // inline: nothing may start until we are done
    lk.unlock();
    execute(op);
    lk.lock();
    running_ = false;
    lk.unlock();
    cv_.notify_all();
  } else {
    if (!worker_.joinable()) worker_ = std::thread(&Communicator::worker_loop, this);
    queue_.push_back(std::move(op));
    lk.unlock();
    cv_.notify_all();
    if (!async) work->wait(-1);  // each queued op ends by its own deadline
  }
  if (async) return work;
  if (work->failed()) work->rethrow();
  // Done: one shared completed Work stands for every blocking op that
  // succeeded (this one's may live in this frame).
  static const std::shared_ptr<Work> done = [] {
    auto w = std::make_shared<Work>();
    w->finish();
    return w;
  }();
  return done;
}

void Communicator::worker_loop() {
  std::unique_lock<std::mutex> lk(mu_);
  for (;;) {
    cv_.wait(lk, [&] { return (!queue_.empty() && !running_) || (stopping_ && queue_.empty()); });
    if (queue_.empty()) return;
    Op op = std::move(queue_.front());
    queue_.pop_front();
    running_ = true;
    lk.unlock();
    execute(op);
    lk.lock();
    running_ = false;
    cv_.notify_all();
  }
}

void Communicator::close() {
  {
    std::unique_lock<std::mutex> lk(mu_);
    if (closed_) return;
    stopping_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) {
    if (worker_.get_id() == std::this_thread::get_id()) {
      worker_.detach();  // closed from the worker itself: it stops after this op
    } else {
      worker_.join();
    }
  }
  std::unique_lock<std::mutex> lk(mu_);
  cv_.wait(lk, [&] { return !running_; });  // an inline op on another thread
  closed_ = true;
  {
    std::lock_guard<std::mutex> dlk(device_mu_);
    device_.reset();  // every op ended with its peers: nobody reads our staging any more
  }
  transport_.reset();
  if (p2p_) p2p_->close();
}

std::vector<int> Communicator::lost_peers() {
  std::lock_guard<std::mutex> lk(mu_);  // against close(), which releases the transport
  if (!transport_) throw CommError(ErrorKind::kValue, "the communicator is closed");
  std::vector<int> lost;
  for (int p = 0; p < size_; ++p)
    if (!transport_->peer_alive(p)) lost.push_back(p);
  return lost;
}

void Communicator::abort(const std::string& reason) {
  std::string msg = strprintf("[rank %d] communicator aborted: %s", rank_, reason.c_str());
  {
    std::lock_guard<std::mutex> lk(broken_mu_);
    if (!broken_) {
      broken_ = true;
      broken_msg_ = msg;
    }
  }
  if (p2p_) p2p_->abort(ErrorKind::kAborted, msg);
  std::lock_guard<std::mutex> lk(mu_);
  if (!transport_) return;
  transport_->abort_self(ErrorKind::kAborted, msg);
  transport_->abort_peers(ErrorKind::kAborted, msg);
}

}  // namespace pycomm
