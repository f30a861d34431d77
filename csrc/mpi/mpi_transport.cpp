#include "mpi_transport.h"

#include <sched.h>

#include <algorithm>
#include <random>
#include <chrono>
#include <cstring>
#include <thread>

namespace pycomm {
namespace {

constexpr size_t kMaxAbortReason = 4096;  // bytes of an abort's message sent to peers


int comm_rank(MPI_Comm c) {
  int r = -1;
  MPI_Comm_rank(c, &r);
  return r;
}

int comm_size(MPI_Comm c) {
  int s = 0;
  MPI_Comm_size(c, &s);
  return s;
}

std::string mpi_error(int rc) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) return strprintf("MPI error %d", rc);
  return std::string(text, len);
}

const char* thread_level_name(int level) {
  switch (level) {
    case MPI_THREAD_SINGLE: return "MPI_THREAD_SINGLE";
    case MPI_THREAD_FUNNELED: return "MPI_THREAD_FUNNELED";
    case MPI_THREAD_SERIALIZED: return "MPI_THREAD_SERIALIZED";
    default: return "MPI_THREAD_MULTIPLE";
  }
}

// Checked before anything else touches `comm`: MPI must be running in this
// process (a second copy of libmpi, not mpi4py's, would say it is not) and
// allow calls from pycomm's worker thread.
MPI_Comm usable(MPI_Comm comm) {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (!initialized || finalized)
    throw_error(ErrorKind::kComm,
                finalized ? "MPI transport: MPI is already finalized"
                          : "MPI transport: MPI is not initialized in the library pycomm was built "
                            "against (import mpi4py.MPI first; if it is, mpi4py uses another MPI "
                            "installation than pycomm was built with)");
  int level = MPI_THREAD_SINGLE;
  MPI_Query_thread(&level);
  if (level < MPI_THREAD_MULTIPLE)
    throw_error(ErrorKind::kValue,
                strprintf("MPI transport: needs MPI_THREAD_MULTIPLE (pycomm runs ops on its own "
                          "thread), but MPI was initialized with %s; leave mpi4py.rc.thread_level "
                          "at its default 'multiple'",
                          thread_level_name(level)));
  if (comm == MPI_COMM_NULL) throw_error(ErrorKind::kValue, "MPI transport: the communicator is MPI_COMM_NULL");
  return comm;
}

}  // namespace

MpiTransport::MpiTransport(MPI_Comm comm, const MpiOptions& opts)
    : Transport(comm_rank(usable(comm)), comm_size(comm)), opts_(opts) {
  if (opts_.chunk_bytes < 4096 || opts_.chunk_bytes > (1u << 30) || opts_.chunk_bytes % 64 || opts_.slots < 1)
    throw_error(ErrorKind::kValue,
                strprintf("MPI transport: need chunk_bytes a multiple of 64 from 4096 to 1 GiB and slots >= 1, "
                          "got %zu and %d",
                          opts_.chunk_bytes, opts_.slots));
  // A stream message holds a frame (64 bytes) and some payload.
  if (opts_.eager_bytes < 128 || opts_.eager_bytes > std::min<size_t>(opts_.chunk_bytes, 64 << 10))
    throw_error(ErrorKind::kValue,
                strprintf("MPI transport: need 128 <= eager_bytes <= min(chunk_bytes, 64 KiB), got %zu",
                          opts_.eager_bytes));
  check(MPI_Comm_dup(comm, &comm_), "MPI_Comm_dup", -1);
  // Errors come back as codes pycomm turns into exceptions naming the peer,
  // instead of MPI's default of aborting the job.
  MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
  // MPI reuses a freed communicator's context, and messages of one that
  // failed may still be in flight to it: tags drawn afresh for each
  // transport keep them from matching this one's receives.
  int* tag_ub = nullptr;
  int has_ub = 0;
  MPI_Comm_get_attr(comm_, MPI_TAG_UB, &tag_ub, &has_ub);
  int triples = (has_ub && tag_ub ? *tag_ub : 32767) / 3 - 1;
  // One collective agrees on the tags (rank 0's draw) and checks that every
  // rank cuts messages alike: a receive posted for a smaller message than the
  // peer sends fails, and Open MPI may write past its end first.
  const std::pair<const char*, size_t> knobs[] = {{"PYCOMM_MPI_CHUNK_BYTES", opts_.chunk_bytes},
                                                  {"PYCOMM_MPI_EAGER_BYTES", opts_.eager_bytes},
                                                  {"PYCOMM_MPI_CHANNEL_BYTES", opts_.channel_bytes}};
  long long agreed[7] = {rank_ == 0 ? 3 * static_cast<long long>(std::random_device()() % static_cast<unsigned>(triples)) + 3 : 0};
  for (int i = 0; i < 3; ++i) {  // max and -min of each
    agreed[1 + 2 * i] = static_cast<long long>(knobs[i].second);
    agreed[2 + 2 * i] = -agreed[1 + 2 * i];
  }
  int rc = MPI_Allreduce(MPI_IN_PLACE, agreed, 7, MPI_LONG_LONG, MPI_MAX, comm_);
  int differ = -1;
  for (int i = 0; i < 3 && rc == MPI_SUCCESS && differ < 0; ++i)
    if (agreed[1 + 2 * i] != -agreed[2 + 2 * i]) differ = i;
  if (rc != MPI_SUCCESS || differ >= 0) {
    MPI_Comm_free(&comm_);  // no destructor runs for a half-made transport
    check(rc, "MPI_Allreduce (setup)", -1);
    throw_error(ErrorKind::kValue, strprintf("MPI transport: the ranks set %s differently (from %lld to %lld); it "
                                             "must be the same on every rank",
                                             knobs[differ].first, -agreed[2 + 2 * differ], agreed[1 + 2 * differ]));
  }
  const int base = static_cast<int>(agreed[0]);
  data_tag_ = base;
  abort_tag_ = base + 1;
  payload_tag_ = base + 2;
  spin_us_ = spin_budget_us(opts_.spin_us, opts_.local_ranks > 0 ? opts_.local_ranks : size_);
  links_.resize(size_);
  // The first peer's abort lands here; testing a posted receive costs less
  // than probing for one at every op.
  abort_buf_.resize(sizeof(uint32_t) + kMaxAbortReason);
  rc = MPI_Irecv(abort_buf_.data(), static_cast<int>(abort_buf_.size()), MPI_BYTE, MPI_ANY_SOURCE, abort_tag_, comm_,
                 &abort_req_);
  if (rc != MPI_SUCCESS) {
    MPI_Comm_free(&comm_);
    check(rc, "MPI_Irecv (abort)", -1);
  }
}

namespace {

// Waits up to `until` for a request to complete; one still pending then is
// freed and MPI completes it in the background. Returns whether it completed.
bool settle(MPI_Request& req, std::chrono::steady_clock::time_point until) {
  int done = 0;
  while (req != MPI_REQUEST_NULL && MPI_Test(&req, &done, MPI_STATUS_IGNORE) == MPI_SUCCESS && !done &&
         std::chrono::steady_clock::now() < until)
    std::this_thread::yield();
  if (req == MPI_REQUEST_NULL) return true;
  MPI_Request_free(&req);
  return false;
}

void cancel(MPI_Request& req) {
  if (req == MPI_REQUEST_NULL) return;
  MPI_Cancel(&req);
  settle(req, std::chrono::steady_clock::now() + std::chrono::seconds(1));
}

}  // namespace

MpiTransport::~MpiTransport() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;  // MPI is gone and will not touch the buffers again
  cancel(abort_req_);
  const bool failed = failed_ || peer_aborted_ || self_aborted_.load();
  if (failed) drain();  // what a failure left
  for (Link& l : links_)
    for (Posted& p : l.in) cancel(p.req);
  // Stream receives still posted are cancelled; sends get a moment to
  // complete (the peer has read them if it finished its op); a buffer whose
  // send is still pending then is kept forever, since MPI may yet read it.
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  for (Link& l : links_) {
    for (MPI_Request& req : l.out.req) settle(req, until);  // none after a finished exchange
    for (Slot& s : l.recv) cancel(s.req);
    for (size_t i = 0; i < l.send_buf.size(); ++i)
      if (!settle(l.send.req[i], until)) (void)l.send_buf[i].release();
  }
  for (auto& sent : sent_aborts_)
    if (!settle(sent.second, until)) (void)sent.first.release();
  // A failed transport's communicator is kept, not freed: a peer's message
  // still on its way (a failure stops ranks at different points) would land
  // in the communicator Open MPI next gives the freed context to, and throw
  // its message ordering out (a later collective then hangs).
  if (!failed) MPI_Comm_free(&comm_);
}

void MpiTransport::check(int rc, const char* what, int peer) const {
  if (rc == MPI_SUCCESS) return;
  throw_error(ErrorKind::kComm, peer < 0 ? strprintf("rank %d: %s failed: %s", rank_, what, mpi_error(rc).c_str())
                                         : strprintf("rank %d: %s with rank %d failed: %s", rank_, what, peer,
                                                     mpi_error(rc).c_str()));
}

size_t MpiTransport::reap(Sends& s, int peer) {
  while (s.busy > 0) {
    int done = 0;
    check(MPI_Test(&s.req[s.first], &done, MPI_STATUS_IGNORE), "MPI_Test (send)", peer);
    if (!done) break;
    s.first = (s.first + 1) % s.req.size();
    --s.busy;
  }
  return s.busy;
}

bool MpiTransport::send_room(int peer) {
  Link& l = links_[peer];
  if (l.send_buf.empty()) {
    l.send.req.assign(opts_.slots, MPI_REQUEST_NULL);
    l.send_buf.resize(opts_.slots);
    for (auto& b : l.send_buf) b.reset(new uint8_t[opts_.eager_bytes]);
  }
  return reap(l.send, peer) < l.send.req.size();
}

size_t MpiTransport::try_send(int peer, const void* data, size_t n, size_t granule) {
  if (n == 0 || !send_room(peer)) return 0;
  if (granule > opts_.eager_bytes)
    throw_error(ErrorKind::kComm, strprintf("rank %d: MPI transport: a %zu-byte unit exceeds eager_bytes (%zu)",
                                            rank_, granule, opts_.eager_bytes));
  size_t take = std::min(n, opts_.eager_bytes);
  if (take < n) take -= take % granule;
  Link& l = links_[peer];
  const size_t i = l.send.next();
  std::memcpy(l.send_buf[i].get(), data, take);
  check(MPI_Isend(l.send_buf[i].get(), static_cast<int>(take), MPI_BYTE, peer, data_tag_, comm_, &l.send.req[i]),
        "MPI_Isend", peer);
  ++l.send.busy;
  return take;
}

void MpiTransport::post_recv(int peer, Slot& s) {
  s.size = s.off = 0;
  check(MPI_Irecv(s.buf.get(), static_cast<int>(opts_.eager_bytes), MPI_BYTE, peer, data_tag_, comm_, &s.req),
        "MPI_Irecv", peer);
}

MpiTransport::Slot* MpiTransport::ready_message(int peer) {
  Link& l = links_[peer];
  if (!l.recv_posted) {  // first use of this link: post every slot, in order
    l.recv.resize(opts_.slots);
    for (Slot& s : l.recv) {
      s.buf.reset(new uint8_t[opts_.eager_bytes]);
      post_recv(peer, s);
    }
    l.recv_posted = true;
  }
  Slot& s = l.recv[l.recv_head];
  if (s.req != MPI_REQUEST_NULL) {
    int done = 0;
    MPI_Status st;
    check(MPI_Test(&s.req, &done, &st), "MPI_Test (receive)", peer);
    if (!done) return nullptr;
    int count = 0;
    MPI_Get_count(&st, MPI_BYTE, &count);
    s.size = static_cast<size_t>(count);
    s.off = 0;
  }
  return s.off < s.size ? &s : nullptr;
}

Span MpiTransport::peek(int peer) {
  Slot* s = ready_message(peer);
  return s ? Span{s->buf.get() + s->off, s->size - s->off} : Span{};
}

void MpiTransport::consume(int peer, size_t n) {
  Link& l = links_[peer];
  Slot& s = l.recv[l.recv_head];
  s.off += n;
  if (s.off == s.size) {  // read through: the slot takes the next message but SLOTS-1
    post_recv(peer, s);
    l.recv_head = (l.recv_head + 1) % l.recv.size();
  }
}

size_t MpiTransport::try_recv_into(int peer, void* dst, size_t n, size_t granule) {
  size_t got = 0;
  while (got < n) {
    Slot* s = ready_message(peer);
    if (!s) break;
    size_t avail = s->size - s->off, want = n - got;
    size_t take = avail >= want ? want : avail - avail % granule;
    if (take == 0) break;
    std::memcpy(static_cast<uint8_t*>(dst) + got, s->buf.get() + s->off, take);
    consume(peer, take);
    got += take;
  }
  return got;
}

size_t MpiTransport::send_payload(int peer, const uint8_t* data, size_t total, size_t done, size_t ready) {
  Link& l = links_[peer];
  if (l.out.req.empty()) l.out.req.assign(opts_.slots, MPI_REQUEST_NULL);
  reap(l.out, peer);
  while (done < ready && l.out.busy < l.out.req.size()) {
    const size_t size = std::min(opts_.chunk_bytes, total - done);
    if (done + size > ready) break;  // the receiver expects whole messages
    check(MPI_Isend(data + done, static_cast<int>(size), MPI_BYTE, peer, payload_tag_, comm_,
                    &l.out.req[l.out.next()]),
          "MPI_Isend (payload)", peer);
    ++l.out.busy;
    done += size;
  }
  return done;
}

bool MpiTransport::payload_sent(int peer) {
  Link& l = links_[peer];
  return l.out.req.empty() || reap(l.out, peer) == 0;
}

Span MpiTransport::recv_payload(int peer, uint8_t* dst, size_t total, size_t done, bool) {
  Link& l = links_[peer];
  if (l.in.empty()) l.in.resize(opts_.slots);
  if (done == 0 && l.in_busy == 0) l.in_posted = 0;  // a new payload
  while (l.in_busy < l.in.size() && l.in_posted < total) {
    const size_t i = (l.in_head + l.in_busy) % l.in.size();
    Posted& p = l.in[i];
    p.size = std::min(opts_.chunk_bytes, total - l.in_posted);
    p.off = 0;
    p.arrived = false;
    if (dst) {
      p.at = dst + l.in_posted;
    } else {
      if (l.in_slots.empty()) l.in_slots.resize(l.in.size());
      if (!l.in_slots[i]) l.in_slots[i].reset(new uint8_t[opts_.chunk_bytes]);
      p.at = l.in_slots[i].get();
    }
    check(MPI_Irecv(p.at, static_cast<int>(p.size), MPI_BYTE, peer, payload_tag_, comm_, &p.req),
          "MPI_Irecv (payload)", peer);
    ++l.in_busy;
    l.in_posted += p.size;
  }
  Posted* p = payload_arrived(peer);
  return p ? Span{p->at + p->off, p->size - p->off} : Span{};
}

MpiTransport::Posted* MpiTransport::payload_arrived(int peer) {
  Link& l = links_[peer];
  if (l.in_busy == 0) return nullptr;
  Posted& p = l.in[l.in_head];
  if (!p.arrived) {
    int done = 0;
    MPI_Status st;
    check(MPI_Test(&p.req, &done, &st), "MPI_Test (payload)", peer);
    if (!done) return nullptr;
    int count = 0;
    MPI_Get_count(&st, MPI_BYTE, &count);
    if (static_cast<size_t>(count) != p.size)
      throw_error(ErrorKind::kComm,
                  strprintf("rank %d: a payload message of %d bytes from rank %d, expected %zu (do the ranks "
                            "use different PYCOMM_MPI_CHUNK_BYTES?)",
                            rank_, count, peer, p.size));
    p.arrived = true;
  }
  return &p;
}

void MpiTransport::consume_payload(int peer, size_t n) {
  Link& l = links_[peer];
  Posted& p = l.in[l.in_head];
  p.off += n;
  if (p.off < p.size) return;
  l.in_head = (l.in_head + 1) % l.in.size();
  --l.in_busy;
}

void MpiTransport::drop_payloads() {
  failed_ = true;
  // Receives into the caller's memory are cancelled (or, if they already
  // matched, completed); then the caller's buffers our sends read are kept
  // until those sends are taken (drain), or given up on.
  for (Link& l : links_) {
    for (Posted& p : l.in) cancel(p.req);
    l.in_head = l.in_busy = l.in_posted = 0;
  }
  drain();
  for (Link& l : links_) {
    for (MPI_Request& req : l.out.req)
      if (req != MPI_REQUEST_NULL) MPI_Request_free(&req);
    l.out.first = l.out.busy = 0;
  }
}

void MpiTransport::drain() {
  // After a failure, messages no receive will take would stay in MPI, and a
  // context Open MPI reuses for a later communicator while they are there
  // hangs that communicator's creation. So a failed transport takes and
  // discards whatever arrives on its tags, and gives its own sends a second
  // to be taken (a peer that failed with us drains them as we drain its),
  // then a few milliseconds more for messages still on their way.
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now(), until = start + std::chrono::seconds(1);
  std::vector<uint8_t> sink;
  for (;;) {
    for (int tag : {data_tag_, payload_tag_, abort_tag_}) {
      int flag = 1;
      while (flag) {
        MPI_Message msg;
        MPI_Status st;
        if (MPI_Improbe(MPI_ANY_SOURCE, tag, comm_, &flag, &msg, &st) != MPI_SUCCESS) return;
        if (!flag) break;
        int count = 0;
        MPI_Get_count(&st, MPI_BYTE, &count);
        sink.resize(std::max<size_t>(sink.size(), static_cast<size_t>(count)));
        if (MPI_Mrecv(sink.data(), count, MPI_BYTE, &msg, MPI_STATUS_IGNORE) != MPI_SUCCESS) return;
      }
    }
    bool sending = false;
    for (int p = 0; p < size_; ++p) {
      Link& l = links_[p];
      for (Sends* s : {&l.send, &l.out})
        if (!s->req.empty() && s->busy) {
          int done = 0;  // any order: a failed peer takes what it takes
          for (size_t k = 0; k < s->busy; ++k) {
            MPI_Request& req = s->req[(s->first + k) % s->req.size()];
            if (req != MPI_REQUEST_NULL && MPI_Test(&req, &done, MPI_STATUS_IGNORE) == MPI_SUCCESS && !done)
              sending = true;
          }
        }
    }
    const auto now = Clock::now();
    if (now >= until || (!sending && now - start >= std::chrono::milliseconds(5))) return;
    std::this_thread::yield();
  }
}

void MpiTransport::check_abort() {
  if (self_aborted_.load(std::memory_order_acquire)) {
    std::lock_guard<std::mutex> lk(abort_mu_);
    throw CommError(self_abort_kind_, self_abort_reason_, true);
  }
  if (!peer_aborted_) {
    // MPI_Test progresses and looks again: an abort that has arrived is
    // seen, so an op does not start on top of it.
    int flag = 0;
    MPI_Status st;
    check(MPI_Test(&abort_req_, &flag, &st), "MPI_Test (abort)", -1);
    if (!flag) return;
    int count = 0;
    MPI_Get_count(&st, MPI_BYTE, &count);
    uint32_t kind = static_cast<uint32_t>(ErrorKind::kAborted);
    if (count >= static_cast<int>(sizeof(kind))) std::memcpy(&kind, abort_buf_.data(), sizeof(kind));
    if (kind > static_cast<uint32_t>(ErrorKind::kType)) kind = static_cast<uint32_t>(ErrorKind::kAborted);
    peer_abort_kind_ = static_cast<ErrorKind>(kind);
    peer_abort_reason_ = count > static_cast<int>(sizeof(kind))
                             ? std::string(abort_buf_.data() + sizeof(kind), count - sizeof(kind))
                             : "peer aborted";
    peer_aborted_ = true;
  }
  throw CommError(peer_abort_kind_, peer_abort_reason_, true);
}

void MpiTransport::poll_abort() { check_abort(); }

bool MpiTransport::ready(const WaitItem& w) {
  Link& l = links_[w.peer];
  if (!w.payload) return w.send ? send_room(w.peer) : ready_message(w.peer) != nullptr;
  if (!w.send) return payload_arrived(w.peer) != nullptr;
  // Room for a payload message, or (bytes 0) every payload send finished.
  if (l.out.req.empty()) return true;
  size_t busy = reap(l.out, w.peer);
  return w.bytes ? busy < l.out.req.size() : busy == 0;
}

void MpiTransport::wait(const WaitItem* items, size_t n, const Deadline& deadline) {
  // MPI has no wait with a deadline that also watches for aborts, and its
  // progress engine runs only inside MPI calls: poll. Spin first; then yield
  // the CPU between polls (a peer on this host may need it), as MPI itself
  // does with mpi_yield_when_idle; a wait that lasts beyond 10 ms (a peer
  // that is not there yet) sleeps between polls, up to 0.2 ms.
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  auto nap = std::chrono::microseconds(10);
  for (unsigned round = 0;; ++round) {
    // A wildcard probe drives every MPI channel: costly next to a test of
    // our own requests, so aborts are looked for on every 64th round only.
    if (round % 64 == 63) check_abort();
    for (size_t i = 0; i < n; ++i)
      if (ready(items[i])) return;
    if (deadline.expired()) throw_error(ErrorKind::kTimeout, describe_wait(rank_, items, n, deadline));
    const auto waited = Clock::now() - start;
    if (waited < std::chrono::microseconds(spin_us_)) continue;
    if (waited < std::chrono::milliseconds(10)) {
      sched_yield();
      continue;
    }
    std::this_thread::sleep_for(nap);
    nap = std::min(nap * 2, std::chrono::microseconds(200));
  }
}

void MpiTransport::abort_peers(ErrorKind kind, const std::string& reason) {
  std::lock_guard<std::mutex> lk(abort_mu_);
  uint32_t k = static_cast<uint32_t>(kind);
  for (int p = 0; p < size_; ++p) {
    if (p == rank_) continue;
    auto msg = std::make_unique<std::string>(reinterpret_cast<const char*>(&k), sizeof(k));
    msg->append(reason, 0, kMaxAbortReason);
    MPI_Request req = MPI_REQUEST_NULL;
    if (MPI_Isend(msg->data(), static_cast<int>(msg->size()), MPI_BYTE, p, abort_tag_, comm_, &req) == MPI_SUCCESS)
      sent_aborts_.emplace_back(std::move(msg), req);  // best effort: a failed send is dropped
  }
}

void MpiTransport::abort_self(ErrorKind kind, const std::string& reason) {
  std::lock_guard<std::mutex> lk(abort_mu_);
  self_abort_kind_ = kind;
  self_abort_reason_ = reason;
  self_aborted_.store(true, std::memory_order_release);
}

}  // namespace pycomm
