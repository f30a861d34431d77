#include "mpi_transport.h"

#include <sched.h>

#include <algorithm>
#include <random>
#include <chrono>
#include <cstring>
#include <thread>

namespace pycomm {
namespace {


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
  if (opts_.chunk_bytes < 4096 || opts_.chunk_bytes > (1u << 30) || opts_.slots < 1)
    throw_error(ErrorKind::kValue,
                strprintf("MPI transport: need 4096 <= chunk_bytes <= 1 GiB and slots >= 1, got %zu and %d",
                          opts_.chunk_bytes, opts_.slots));
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
  int pairs = (has_ub && tag_ub ? *tag_ub : 32767) / 2 - 1;
  int base = rank_ == 0 ? 2 * static_cast<int>(std::random_device()() % static_cast<unsigned>(pairs)) + 2 : 0;
  int rc = MPI_Bcast(&base, 1, MPI_INT, 0, comm_);
  if (rc != MPI_SUCCESS) {
    MPI_Comm_free(&comm_);  // no destructor runs for a half-made transport
    check(rc, "MPI_Bcast (tags)", -1);
  }
  data_tag_ = base;
  abort_tag_ = base + 1;
  spin_us_ = spin_budget_us(opts_.spin_us, opts_.local_ranks > 0 ? opts_.local_ranks : size_);
  links_.resize(size_);
}

MpiTransport::~MpiTransport() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;  // MPI is gone and will not touch the buffers again
  // Receives still posted are cancelled; sends get a moment to complete (the
  // peer has read them if it finished its op); one still pending then keeps
  // its buffer forever, since MPI may yet read it.
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  auto settle = [&](MPI_Request& req, auto release) {
    int done = 0;
    while (req != MPI_REQUEST_NULL && MPI_Test(&req, &done, MPI_STATUS_IGNORE) == MPI_SUCCESS && !done &&
           std::chrono::steady_clock::now() < until)
      std::this_thread::yield();
    if (req != MPI_REQUEST_NULL) {
      MPI_Request_free(&req);
      release();
    }
  };
  for (Link& l : links_) {
    for (Slot& s : l.recv)
      if (s.req != MPI_REQUEST_NULL) {
        MPI_Cancel(&s.req);
        MPI_Wait(&s.req, MPI_STATUS_IGNORE);
      }
    for (Slot& s : l.send) settle(s.req, [&] { (void)s.buf.release(); });
  }
  for (auto& sent : sent_aborts_) settle(sent.second, [&] { (void)sent.first.release(); });
  MPI_Comm_free(&comm_);
}

void MpiTransport::check(int rc, const char* what, int peer) const {
  if (rc == MPI_SUCCESS) return;
  throw_error(ErrorKind::kComm, peer < 0 ? strprintf("rank %d: %s failed: %s", rank_, what, mpi_error(rc).c_str())
                                         : strprintf("rank %d: %s with rank %d failed: %s", rank_, what, peer,
                                                     mpi_error(rc).c_str()));
}

bool MpiTransport::send_room(int peer) {
  Link& l = links_[peer];
  if (l.send.empty()) {
    l.send.resize(opts_.slots);
    for (Slot& s : l.send) s.buf.reset(new uint8_t[opts_.chunk_bytes]);
  }
  // Sends complete in any order; reaping the oldest first is enough.
  while (l.send_busy > 0) {
    int done = 0;
    check(MPI_Test(&l.send[l.send_first].req, &done, MPI_STATUS_IGNORE), "MPI_Test (send)", peer);
    if (!done) break;
    l.send_first = (l.send_first + 1) % l.send.size();
    --l.send_busy;
  }
  return l.send_busy < l.send.size();
}

size_t MpiTransport::try_send(int peer, const void* data, size_t n, size_t granule) {
  if (n == 0 || !send_room(peer)) return 0;
  if (granule > opts_.chunk_bytes)
    throw_error(ErrorKind::kComm, strprintf("rank %d: MPI transport: a %zu-byte unit exceeds chunk_bytes (%zu)",
                                            rank_, granule, opts_.chunk_bytes));
  size_t take = std::min(n, opts_.chunk_bytes);
  if (take < n) take -= take % granule;
  Link& l = links_[peer];
  Slot& s = l.send[(l.send_first + l.send_busy) % l.send.size()];
  std::memcpy(s.buf.get(), data, take);
  check(MPI_Isend(s.buf.get(), static_cast<int>(take), MPI_BYTE, peer, data_tag_, comm_, &s.req), "MPI_Isend", peer);
  ++l.send_busy;
  return take;
}

void MpiTransport::post_recv(int peer, Slot& s) {
  s.size = s.off = 0;
  check(MPI_Irecv(s.buf.get(), static_cast<int>(opts_.chunk_bytes), MPI_BYTE, peer, data_tag_, comm_, &s.req),
        "MPI_Irecv", peer);
}

MpiTransport::Slot* MpiTransport::ready_message(int peer) {
  Link& l = links_[peer];
  if (!l.recv_posted) {  // first use of this link: post every slot, in order
    l.recv.resize(opts_.slots);
    for (Slot& s : l.recv) {
      s.buf.reset(new uint8_t[opts_.chunk_bytes]);
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

void MpiTransport::check_abort() {
  if (self_aborted_.load(std::memory_order_acquire)) {
    std::lock_guard<std::mutex> lk(abort_mu_);
    throw CommError(self_abort_kind_, self_abort_reason_, true);
  }
  int flag = 0;
  MPI_Status st;
  // Open MPI's probe looks before it progresses: an abort that has arrived
  // is seen by the second call, so an op does not start on top of it.
  for (int i = 0; i < 2 && !flag; ++i)
    check(MPI_Iprobe(MPI_ANY_SOURCE, abort_tag_, comm_, &flag, &st), "MPI_Iprobe", -1);
  if (!flag) return;
  int count = 0;
  MPI_Get_count(&st, MPI_BYTE, &count);
  std::string msg(static_cast<size_t>(count), '\0');
  check(MPI_Recv(msg.data(), count, MPI_BYTE, st.MPI_SOURCE, abort_tag_, comm_, MPI_STATUS_IGNORE), "MPI_Recv (abort)",
        st.MPI_SOURCE);
  uint32_t kind = static_cast<uint32_t>(ErrorKind::kAborted);
  if (msg.size() >= sizeof(kind)) std::memcpy(&kind, msg.data(), sizeof(kind));
  if (kind > static_cast<uint32_t>(ErrorKind::kType)) kind = static_cast<uint32_t>(ErrorKind::kAborted);
  throw CommError(static_cast<ErrorKind>(kind), msg.size() > sizeof(kind) ? msg.substr(sizeof(kind)) : "peer aborted",
                  true);
}

void MpiTransport::poll_abort() { check_abort(); }

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
    if (round % 64 == 0) check_abort();
    for (size_t i = 0; i < n; ++i)
      if (items[i].send ? send_room(items[i].peer) : ready_message(items[i].peer) != nullptr) return;
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
    msg->append(reason, 0, 4096);
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
