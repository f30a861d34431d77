// One host's single copy (p2p_engine.h): a receive copies the payload out of
// the sender's memory a slice at a time, and a waiting sender writes a part
// of it (HELP, PUSH, PUSHED).
#include <algorithm>
#include <chrono>
#include <cstring>

#include "../common/error.h"
#include "../transport/cma.h"
#include "protocol.h"

namespace pycomm {
using namespace p2p;

namespace {

// Only where this much is left to copy do two copy: below, the messages cost
// more than the second CPU saves.
constexpr size_t kSplitMinBytes = 256 << 10;
// A single-copy receive copies this much at a time, so that a HELP can come
// in between; its first slice is smaller, for the HELP of a sender that
// waits at once.
constexpr size_t kCopySliceBytes = 1 << 20;
constexpr size_t kFirstSliceBytes = kSplitMinBytes;
// How fast a peer copying for us is assumed to go at least, for how long we
// poll for its answer instead of sleeping.
constexpr double kPeerCopyBytesPerNs = 1.0;

}  // namespace

// The single copy (the header's comment), for a receive that took an RTS:
// its first slice now, the rest by copy_some(). False, and no more tries
// with this peer, where the kernel refuses it.
bool P2PEngine::copy_in(int peer, const std::shared_ptr<P2POp>& op, const Offer& m) {
  const size_t first = std::min(m.bytes, kFirstSliceBytes);
  op->far = m.addr;
  op->far_pid = m.pid;
  op->until = m.bytes;
  op->stage = kCopying;
  active_.push_back(op);  // where a lost peer fails it
  try {
    if (!cma::read(m.pid, m.addr, op->buf, first, peer)) {
      active_.remove(op);
      single_copy_[peer] = false;
      return false;
    }
    op->done = first;
    if (m.help) on_help(peer, *op);
    if (op->done == op->until) copied(peer, *op);
  } catch (const CommError& e) {
    if (e.kind() != ErrorKind::kPeerLost && e.kind() != ErrorKind::kComm) throw;
    fail_peer(peer, e.kind(), e.what());
  }
  return true;
}

// A slice of every single-copy receive; whether any moved.
bool P2PEngine::copy_some() {
  std::vector<std::shared_ptr<P2POp>> copying;
  for (auto& op : active_)
    if (op->stage == kCopying) copying.push_back(op);
  for (auto& op : copying) {
    if (op->work->is_completed()) continue;  // failed by an earlier one's peer
    const int peer = op->source;
    try {
      const size_t to = std::min(op->until, op->done + kCopySliceBytes);
      read_part(peer, *op, op->done, to);
      op->done = to;
      if (to == op->until) copied(peer, *op);
    } catch (const CommError& e) {
      if (e.kind() != ErrorKind::kPeerLost && e.kind() != ErrorKind::kComm) throw;
      fail_peer(peer, e.kind(), e.what());
    }
  }
  return !copying.empty();
}

// Our part of a single-copy receive is in. Done, unless the sender still
// writes its part; FIN only then, since we may yet have to read its part
// ourselves (PUSHED with nothing written).
void P2PEngine::copied(int peer, P2POp& op) {
  if (op.until < op.received && !op.pushed) {
    op.stage = kWaitPushed;
    expect_peer(op.received - op.until);
    return;
  }
  reply(peer, kFin, Offer{kFin, op.msg, 0, op.tag, op.received, 0, 0}, op.bytes);
  finish(op);
}

// Bytes [from, to) of a single-copy receive's payload, read by us.
void P2PEngine::read_part(int peer, P2POp& op, size_t from, size_t to) {
  if (from < to && !cma::read(op.far_pid, op.far + from, op.buf + from, to - from, peer))
    throw_error(ErrorKind::kComm, strprintf("%s: reading rank %d's memory was refused after its first slice",
                                            what(op).c_str(), peer));
}

// A send we wait for without a limit: nothing else for this thread to do, so
// it offers its receiver to copy a part.
void P2PEngine::offer_help(P2POp& op) {
  if (!op.send || op.stage != kWaitCts || op.helping || !own_cpus_ || !single_copy_[op.peer] ||
      op.bytes < kSplitMinBytes || !dead_[op.peer].empty())
    return;
  op.helping = true;
  reply(op.peer, kHelp, Offer{kHelp, op.msg, 0, op.tag, op.bytes, 0, 0}, 0);
  expect_peer(op.bytes);
}

// Our sender offers to copy (HELP): where enough is left, it gets the second
// half of it (PUSH).
void P2PEngine::on_help(int peer, P2POp& op) {
  if (op.stage != kCopying || op.until < op.received || op.until - op.done < kSplitMinBytes) return;
  op.until = op.done + (((op.until - op.done) / 2) & ~size_t{4095});
  const uint64_t buf = reinterpret_cast<uintptr_t>(op.buf);
  reply(peer, kPush, Offer{kPush, op.msg, 0, op.tag, op.received, 0, 0}, op.until, buf);
  progress_sends(peer);  // out before our next slice
}

// Our receiver asks us to write [recv_bytes, bytes) of our send into its
// buffer (PUSH). Answered even when our send is gone (failed meanwhile):
// with nothing written, the receiver copies all.
void P2PEngine::on_push(int peer, P2POp* op, const uint8_t* header) {
  Header h;
  std::memcpy(&h, header, sizeof(h));
  size_t wrote = 0;
  if (op && op->stage == kWaitCts && h.bytes == op->bytes && h.recv_bytes <= h.bytes) {
    const size_t from = h.recv_bytes, n = h.bytes - h.recv_bytes;
    if (cma::write(h.pid, h.addr + from, op->buf + from, n, peer)) wrote = n;
    expect_peer(h.recv_bytes);  // FIN comes once the receiver has its part
  }
  reply(peer, kPushed, Offer{kPushed, h.msg, h.seq, h.tag, h.bytes, 0, 0}, wrote);
}

// The sender wrote its part of our receive (or nothing: we copy it).
void P2PEngine::on_pushed(int peer, P2POp& op, size_t wrote) {
  if (op.stage != kCopying && op.stage != kWaitPushed) return;
  if (!wrote) {
    op.until = op.received;
    op.stage = kCopying;
    return;
  }
  op.pushed = true;
  if (op.stage == kWaitPushed) copied(peer, op);
}

void P2PEngine::expect_peer(size_t bytes) {
  if (!own_cpus_) return;  // polling would take the CPU the peer copies on
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(1) +
                     std::chrono::nanoseconds(static_cast<int64_t>(bytes / kPeerCopyBytesPerNs));
  peer_busy_until_ = std::max(peer_busy_until_, until);
}

}  // namespace pycomm
