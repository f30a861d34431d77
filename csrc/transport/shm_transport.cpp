#include "shm_transport.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>

#include "../kernels/reduce.h"
#include "cma.h"
#include "futex.h"
#include "shm_segment.h"

namespace pycomm {

using namespace shm;

namespace {

std::string random_name(int rank) {
  unsigned char b[12];
  if (getrandom(b, sizeof(b), 0) != static_cast<ssize_t>(sizeof(b)))
    throw_error(ErrorKind::kComm, "getrandom failed for a shared-memory segment name");
  std::string s = "/pycomm-";
  static const char* hex = "0123456789abcdef";
  for (unsigned char c : b) {
    s += hex[c >> 4];
    s += hex[c & 15];
  }
  return s + "-r" + std::to_string(rank);
}

}  // namespace

ShmTransport::ShmTransport(int rank, int size, const BootstrapAllgather& allgather,
                           const ShmOptions& opts)
    : Transport(rank, size), opts_(opts), segs_(size),
      send_head_(size, 0), send_pad_(size, 0), recv_tail_(size, 0), recv_pad_(size, 0),
      payload_posted_(size, 0), payload_acked_(size, 0), posted_(size), asked_(size) {
  if (opts_.ring_bytes < 4096 || opts_.ring_bytes % kAlign)
    throw_error(ErrorKind::kValue, "shm ring size must be a multiple of 64 bytes, >= 4096");
  wait_ = wait_policy(opts_.spin_us, opts_.local_ranks > 0 ? opts_.local_ranks : size);
  if (opts_.cma_bytes < 0)
    opts_.cma_bytes = oversubscribed(opts_.local_ranks > 0 ? opts_.local_ranks : size) ? 64 << 10 : 1 << 20;

  // Create ours: exclusive, 0600, locked for as long as we live.
  auto own = std::make_unique<Segment>();
  own->owner = true;
  own->name = random_name(rank);
  own->bytes = Segment::size_for(size, opts_.ring_bytes);
  own->fd = shm_open(own->name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  if (own->fd < 0)
    throw_error(ErrorKind::kComm, strprintf("rank %d: shm_open(%s) failed: %s", rank,
                                            own->name.c_str(), strerror(errno)));
  if (ftruncate(own->fd, own->bytes) != 0 || flock(own->fd, LOCK_EX | LOCK_NB) != 0)
    throw_error(ErrorKind::kComm, strprintf("rank %d: cannot size or lock %s: %s", rank,
                                            own->name.c_str(), strerror(errno)));
  own->base = mmap(nullptr, own->bytes, PROT_READ | PROT_WRITE, MAP_SHARED, own->fd, 0);
  if (own->base == MAP_FAILED) {
    own->base = nullptr;
    throw_error(ErrorKind::kComm, strprintf("rank %d: mmap of %zu bytes failed: %s", rank,
                                            own->bytes, strerror(errno)));
  }
  Header* h = new (own->base) Header();
  h->nranks = size;
  h->rank = rank;
  h->ring_bytes = opts_.ring_bytes;
  h->pid = static_cast<int32_t>(getpid());
  if (getrandom(&probe_token_, sizeof(probe_token_), 0) != static_cast<ssize_t>(sizeof(probe_token_)))
    probe_token_ = static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  h->probe_addr = reinterpret_cast<uint64_t>(&probe_token_);
  h->probe_token = probe_token_;
  h->cma_bytes = static_cast<uint64_t>(opts_.cma_bytes);
  h->can_help = opts_.split < 0 ? !oversubscribed(opts_.local_ranks > 0 ? opts_.local_ranks : size) : opts_.split > 0;
  if (opts_.cma_bytes > 0) cma::allow_readers();
  for (int p = 0; p < size; ++p) new (own->ctl(p)) RingCtl();
  h->magic = kMagic;
  segs_[rank] = std::move(own);

  // If anything below throws, ~Segment unlinks ours.
  std::vector<std::string> names = allgather(segs_[rank]->name);
  for (int p = 0; p < size; ++p) {
    if (p == rank) continue;
    auto seg = std::make_unique<Segment>();
    seg->name = names[p];
    seg->bytes = Segment::size_for(size, opts_.ring_bytes);
    seg->fd = shm_open(seg->name.c_str(), O_RDWR, 0);
    struct stat st;
    if (seg->fd < 0 || fstat(seg->fd, &st) != 0 || static_cast<size_t>(st.st_size) != seg->bytes)
      throw_error(ErrorKind::kComm,
                  strprintf("rank %d: cannot open rank %d's shared memory %s (%s); ranks that "
                            "share a host id must share /dev/shm (set PYCOMM_TRANSPORT=tcp)",
                            rank, p, seg->name.c_str(), strerror(errno)));
    seg->base = mmap(nullptr, seg->bytes, PROT_READ | PROT_WRITE, MAP_SHARED, seg->fd, 0);
    if (seg->base == MAP_FAILED) {
      seg->base = nullptr;
      throw_error(ErrorKind::kComm, strprintf("rank %d: mmap of rank %d's segment failed: %s",
                                              rank, p, strerror(errno)));
    }
    Header* ph = seg->header();
    if (ph->magic != kMagic || ph->nranks != static_cast<uint32_t>(size) ||
        ph->rank != static_cast<uint32_t>(p) || ph->ring_bytes != opts_.ring_bytes)
      throw_error(ErrorKind::kMismatch,
                  strprintf("rank %d: rank %d's segment has another layout (ring %llu bytes, "
                            "%u ranks; here %zu bytes, %d ranks)",
                            rank, p, static_cast<unsigned long long>(ph->ring_bytes), ph->nranks,
                            opts_.ring_bytes, size));
    segs_[p] = std::move(seg);
  }
  bool reads_all = opts_.cma_bytes > 0;
  for (int p = 0; p < size && reads_all; ++p) reads_all = p == rank || probe_reads(p);
  segs_[rank]->header()->reads_all.store(reads_all ? 1 : 0, std::memory_order_release);
  // Everyone has mapped everything (and probed): the names are no longer needed.
  allgather(std::string());
  shm_unlink(segs_[rank]->name.c_str());
  segs_[rank]->unlinked = true;
  cma_ = split_ = true;
  for (int p = 0; p < size; ++p) {
    const Header* ph = segs_[p]->header();
    cma_ = cma_ && ph->reads_all.load(std::memory_order_acquire);
    cma_min_ = std::max<uint64_t>(cma_min_, ph->cma_bytes);
    split_ = split_ && ph->can_help;
  }
  split_ = split_ && cma_;
}

ShmTransport::~ShmTransport() = default;

size_t ShmTransport::room(int peer) {
  uint64_t tail = segs_[peer]->ctl(rank_)->tail.load(std::memory_order_acquire);
  uint64_t used = send_head_[peer] - tail;
  size_t free = opts_.ring_bytes - used;
  return free > send_pad_[peer] ? free - send_pad_[peer] : 0;
}

size_t ShmTransport::available(int peer) {
  uint64_t head = segs_[rank_]->ctl(peer)->head.load(std::memory_order_acquire);
  uint64_t avail = head - recv_tail_[peer];
  return avail > recv_pad_[peer] ? avail - recv_pad_[peer] : 0;
}

void ShmTransport::ring_bell(int peer) {
  Header* h = segs_[peer]->header();
  h->bell.fetch_add(1, std::memory_order_seq_cst);
  if (h->sleeping.load(std::memory_order_seq_cst)) futex_wake_all(&h->bell);
}

size_t ShmTransport::try_send(int peer, const void* data, size_t n, size_t granule) {
  size_t free = room(peer);
  size_t take = n <= free ? n : free - free % granule;
  if (take == 0) return 0;
  Segment& s = *segs_[peer];
  uint64_t head = send_head_[peer] + send_pad_[peer];
  send_pad_[peer] = 0;
  size_t off = head % opts_.ring_bytes;
  size_t first = std::min(take, opts_.ring_bytes - off);
  uint8_t* ring = s.ring(rank_);
  kernels::copy(ring + off, data, first);
  if (take > first) kernels::copy(ring, static_cast<const uint8_t*>(data) + first, take - first);
  send_head_[peer] = head + take;
  s.ctl(rank_)->head.store(head + take, std::memory_order_release);
  ring_bell(peer);
  return take;
}

Span ShmTransport::peek(int peer) {
  size_t avail = available(peer);
  if (avail == 0) return {};
  if (recv_pad_[peer]) {
    recv_tail_[peer] += recv_pad_[peer];
    recv_pad_[peer] = 0;
  }
  size_t off = recv_tail_[peer] % opts_.ring_bytes;
  size_t contiguous = std::min(avail, opts_.ring_bytes - off);
  return {segs_[rank_]->ring(peer) + off, contiguous};
}

void ShmTransport::consume(int peer, size_t n) {
  recv_tail_[peer] += n;
  segs_[rank_]->ctl(peer)->tail.store(recv_tail_[peer], std::memory_order_release);
  ring_bell(peer);
}

void ShmTransport::end_send(int peer) {
  uint64_t h = send_head_[peer] + send_pad_[peer];
  send_pad_[peer] += align_up(h, kAlign) - h;
}

void ShmTransport::end_recv(int peer) {
  uint64_t t = recv_tail_[peer] + recv_pad_[peer];
  recv_pad_[peer] += align_up(t, kAlign) - t;
}

void ShmTransport::check_abort() {
  Header* h = segs_[rank_]->header();
  uint32_t k = h->abort_kind.load(std::memory_order_acquire);
  if (k != 0 && k != kAbortWriting)
    throw CommError(static_cast<ErrorKind>(k - 1), std::string(h->abort_reason), true);
}

bool ShmTransport::peer_alive(int peer) {
  // The owner holds LOCK_EX on its segment while it lives; getting a shared
  // lock means it is gone (this works across pid namespaces, unlike kill(pid, 0)).
  if (peer == rank_) return true;
  int fd = segs_[peer]->fd;
  if (flock(fd, LOCK_SH | LOCK_NB) != 0) return true;
  flock(fd, LOCK_UN);
  return false;
}

void ShmTransport::check_alive(int peer) {
  if (!peer_alive(peer))
    throw_error(ErrorKind::kPeerLost,
                strprintf("rank %d: peer rank %d exited or closed its communicator", rank_, peer));
}

void ShmTransport::wait(const WaitItem* items, size_t n, const Deadline& deadline) {
  auto ready = [&] {
    check_abort();
    for (size_t i = 0; i < n; ++i) {
      const WaitItem& w = items[i];
      if (w.payload && w.send) {  // room for a payload message, or every payload acknowledged (an ask served)
        if (w.bytes ? room(w.peer) >= sizeof(PayloadDesc) : payload_sent(w.peer)) return true;
        continue;
      }
      if (w.payload && asked_[w.peer].len) {  // the sender's part of a split payload
        if (push_done(w.peer)) return true;
        continue;
      }
      size_t want = std::max<size_t>(1, std::min(w.bytes, opts_.ring_bytes / 2));
      if ((w.send ? room(w.peer) : available(w.peer)) >= want) return true;
    }
    return false;
  };
  // Poll first (wait_policy). Yield now and then, because the peer we wait for may share our CPU (the scheduler
  // does put two ranks on one core at times) and could not run otherwise.
  using Clock = std::chrono::steady_clock;
  auto until = Clock::now() + std::chrono::microseconds(wait_.spin_us);
  do {
    for (int i = 0; i < wait_.polls; ++i) {
      if (ready()) return;
      cpu_relax();
    }
    sched_yield();
  } while (Clock::now() < until);
  Header* h = segs_[rank_]->header();
  for (;;) {
    h->sleeping.store(1, std::memory_order_seq_cst);
    uint32_t v = h->bell.load(std::memory_order_seq_cst);
    bool go = ready();
    if (!go) futex_wait(&h->bell, v, deadline.remaining_ms(100));
    h->sleeping.store(0, std::memory_order_relaxed);
    if (go || ready()) return;
    if (deadline.expired()) throw_error(ErrorKind::kTimeout, describe_wait(rank_, items, n, deadline));
    for (size_t i = 0; i < n; ++i) check_alive(items[i].peer);
  }
}

void ShmTransport::post_abort(int p, ErrorKind kind, const std::string& reason) {
  Header* h = segs_[p]->header();
  uint32_t expected = 0;
  if (!h->abort_kind.compare_exchange_strong(expected, kAbortWriting)) return;  // first one wins
  size_t n = std::min(reason.size(), kReasonBytes - 1);
  std::memcpy(h->abort_reason, reason.data(), n);
  h->abort_reason[n] = '\0';
  h->abort_kind.store(static_cast<uint32_t>(kind) + 1, std::memory_order_release);
  ring_bell(p);
}

void ShmTransport::abort_peers(ErrorKind kind, const std::string& reason) {
  for (int p = 0; p < size_; ++p)
    if (p != rank_ && segs_[p]) post_abort(p, kind, reason);
}

void ShmTransport::abort_self(ErrorKind kind, const std::string& reason) {
  post_abort(rank_, kind, reason);
}

}  // namespace pycomm
