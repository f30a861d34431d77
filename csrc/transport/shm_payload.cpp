// The shm transport's payload channel (shm_transport.h): single copies
// through process_vm_readv/writev instead of the rings, and the split of a
// payload between receiver and sender.
#include <sched.h>

#include <cstring>

#include "cma.h"
#include "shm_segment.h"

namespace pycomm {

using namespace shm;

namespace {

// A payload is split from this size: the receiver reads the first half, the
// sender writes the second (both at ~memcpy speed, as point-to-point's split).
constexpr size_t kSplitMinBytes = 512 << 10;

}  // namespace

bool ShmTransport::probe_reads(int peer) {
  const Header* ph = segs_[peer]->header();
  uint64_t got = 0;
  try {
    if (!cma::read(ph->pid, ph->probe_addr, &got, sizeof(got), peer)) return false;
  } catch (const std::exception&) {  // another pid namespace, or no such process: no channel
    return false;
  }
  return got == ph->probe_token;
}

size_t ShmTransport::send_payload(int peer, const uint8_t* data, size_t total, size_t done, size_t ready) {
  if (ready <= done) return done;
  PayloadDesc d{reinterpret_cast<uint64_t>(data + done), ready - done};
  if (try_send(peer, &d, sizeof(d), sizeof(d)) == 0) return done;
  payload_posted_[peer] += d.len;
  posted_[peer] = {d.addr, d.addr + d.len};
  return ready;
}

bool ShmTransport::payload_sent(int peer) {
  serve_push(peer);
  return segs_[peer]->ctl(rank_)->acked.load(std::memory_order_acquire) >= payload_posted_[peer];
}

// Our receiver asks us to write a part of the payload we last posted to it.
// Only a part of that payload is written (anything else is a stale or bad
// ask: answered with nothing written, so the receiver reads it itself).
void ShmTransport::serve_push(int peer) {
  RingCtl* c = segs_[peer]->ctl(rank_);
  uint64_t word = c->push.load(std::memory_order_acquire);
  if (push_phase(word) != kPushAsked ||
      !c->push.compare_exchange_strong(word, push_word(word >> 2, kPushWriting), std::memory_order_acq_rel))
    return;  // nothing asked, or withdrawn just now
  const uint64_t src = c->push_src, dst = c->push_dst, len = c->push_len;
  uint64_t wrote = 0;
  auto answer = [&] {
    c->pushed.store(wrote, std::memory_order_relaxed);
    c->push.store(push_word(word >> 2, kPushDone), std::memory_order_release);
    ring_bell(peer);
  };
  try {
    if (src >= posted_[peer].first && len <= posted_[peer].second - src &&
        cma::write(segs_[peer]->header()->pid, dst, reinterpret_cast<const void*>(src), len, peer))
      wrote = len;
  } catch (...) {  // the receiver is gone, or a write failed midway: it reads all (if it can)
    wrote = 0;
    answer();
    throw;
  }
  answer();
}

Span ShmTransport::recv_payload(int peer, uint8_t* dst, size_t total, size_t done, bool split) {
  if (dst == nullptr)
    throw_error(ErrorKind::kComm, "the shm payload channel takes payloads that are copied, not reduced");
  if (asked_[peer].len) return pushed_part(peer, dst + done);
  Span sp = peek(peer);
  if (sp.size < sizeof(PayloadDesc)) return {};
  PayloadDesc d;
  std::memcpy(&d, sp.data, sizeof(d));
  if (d.len == 0 || d.len > total - done)
    throw_error(ErrorKind::kComm, strprintf("rank %d: corrupt payload message from rank %d (%llu bytes, %zu left)",
                                            rank_, peer, static_cast<unsigned long long>(d.len), total - done));
  // Split: the sender, idle until we acknowledge, writes the second half
  // while we read the first; the descriptor stays in the ring until then.
  size_t head = d.len;
  if (split && split_ && d.len >= kSplitMinBytes) {
    head = (d.len / 2) & ~uint64_t{4095};
    RingCtl* c = segs_[rank_]->ctl(peer);
    c->push_src = d.addr + head;
    c->push_dst = reinterpret_cast<uint64_t>(dst + done + head);
    c->push_len = d.len - head;
    c->push.store(push_word(++push_id_, kPushAsked), std::memory_order_release);
    asked_[peer] = {d.addr + head, d.len - head};
    ring_bell(peer);
  } else {
    consume(peer, sizeof(d));
  }
  read_payload(peer, d.addr, dst + done, head);
  return {dst + done, head};
}

void ShmTransport::read_payload(int peer, uint64_t src, uint8_t* dst, size_t n) {
  if (!cma::read(segs_[peer]->header()->pid, src, dst, n, peer))
    throw_error(ErrorKind::kComm, strprintf("rank %d: the kernel refused to read rank %d's memory, which it "
                                            "allowed when the communicator was made", rank_, peer));
  // A sender that failed meanwhile has aborted us before giving its buffer
  // back to its caller: what we read may be stale.
  check_abort();
}

bool ShmTransport::push_done(int peer) const {
  return push_phase(segs_[rank_]->ctl(peer)->push.load(std::memory_order_acquire)) == kPushDone;
}

// The second half of a split payload, once the sender has answered: written
// by it, or (nothing written) read by us now.
Span ShmTransport::pushed_part(int peer, uint8_t* dst) {
  if (!push_done(peer)) return {};
  const Asked a = asked_[peer];
  asked_[peer] = {};
  consume(peer, sizeof(PayloadDesc));
  if (segs_[rank_]->ctl(peer)->pushed.load(std::memory_order_relaxed) != a.len) read_payload(peer, a.src, dst, a.len);
  return {dst, a.len};
}

void ShmTransport::drop_payloads() {
  for (int p = 0; p < size_; ++p) {
    posted_[p] = {};  // asks for what we posted are no longer answered
    if (!asked_[p].len) continue;
    // Withdraw what we asked; an ask being written waits for the write, which
    // lands in the caller's buffer before we give it back (a dead writer
    // writes no more).
    RingCtl* c = segs_[rank_]->ctl(p);
    uint64_t word = c->push.load(std::memory_order_acquire);
    if (push_phase(word) != kPushAsked ||
        !c->push.compare_exchange_strong(word, push_word(word >> 2, kPushIdle), std::memory_order_acq_rel))
      while (!push_done(p) && peer_alive(p)) sched_yield();
    asked_[p] = {};
  }
}

void ShmTransport::consume_payload(int peer, size_t n) {
  payload_acked_[peer] += n;
  segs_[rank_]->ctl(peer)->acked.store(payload_acked_[peer], std::memory_order_release);
  ring_bell(peer);
}

}  // namespace pycomm
