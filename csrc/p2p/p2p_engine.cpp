#include "p2p_engine.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>

#include "../common/error.h"
#include "../kernels/reduce.h"
#include "../transport/cma.h"
#include "protocol.h"

namespace pycomm {
using namespace p2p;

namespace {

constexpr double kWaitSliceS = 0.002;  // the longest a driving thread keeps the engine in one wait

}  // namespace

struct P2PEngine::Out {
  Header h{};
  const uint8_t* payload = nullptr;
  size_t sent = 0;                 // of sizeof(Header) + h.bytes (0 for control messages)
  bool channel = false;            // the payload goes by the transport's payload channel
  std::shared_ptr<P2POp> op;       // a send completed by writing this (eager, DATA)
  size_t total() const { return sizeof(Header) + (h.kind == kEager || h.kind == kData ? h.bytes : 0); }
};

struct P2PEngine::Unexpected {
  int peer = 0, tag = 0;
  uint64_t msg = 0, seq = 0;
  size_t bytes = 0;
  bool rts = false;
  uint64_t addr = 0;
  int pid = 0;
  bool help = false;               // RTS: its sender offered to copy (HELP)
  bool complete = false;           // eager: every payload byte is in `data`
  bool drop = false;               // refused while still arriving: thrown away when complete
  std::vector<uint8_t> data;
  std::shared_ptr<P2POp> claimed;  // a receive that took it while it was still arriving
};

struct P2PEngine::Incoming {
  bool open = false;     // a header was read; its payload (maybe none) is pending
  bool channel = false;  // the payload comes by the transport's payload channel
  size_t bytes = 0, done = 0;
  uint8_t* dst = nullptr;  // where the payload goes; null: thrown away
  std::shared_ptr<P2POp> op;
  std::list<Unexpected>::iterator unexpected;
  bool to_unexpected = false;
};

P2PEngine::P2PEngine(std::unique_ptr<Transport> transport, size_t eager_bytes, bool same_host,
                     size_t flight_entries)
    : tr_(std::move(transport)), rank_(tr_->rank()), size_(tr_->size()), eager_bytes_(eager_bytes),
      out_(size_), next_msg_(size_, 0), send_seq_(size_), recv_seq_(size_), dead_(size_), refused_(size_),
      single_copy_(size_, same_host), own_cpus_(same_host && !oversubscribed(size_)), flight_(flight_entries) {
  for (int p = 0; p < size_; ++p) in_.push_back(std::make_unique<Incoming>());
  // Where Yama restricts ptrace to ancestors, let the peers read us (a
  // no-op elsewhere; they are our job's own processes either way).
  if (same_host) cma::allow_readers();
}

std::unique_lock<std::mutex> P2PEngine::enter() {
  wanting_.fetch_add(1);
  std::unique_lock<std::mutex> lk(mu_);
  wanting_.fetch_sub(1);
  return lk;
}

P2PEngine::~P2PEngine() {
  auto lk = enter();
  for (auto& op : posted_) op->work->fail(ErrorKind::kAborted, what(*op) + ": the communicator was closed");
  for (auto& op : active_) op->work->fail(ErrorKind::kAborted, what(*op) + ": the communicator was closed");
}

std::string P2PEngine::what(const P2POp& op) const {
  if (op.send) return strprintf("rank %d: send to rank %d (tag %d, %zu bytes)", rank_, op.peer, op.tag, op.bytes);
  if (op.peer == kAnySource) return strprintf("rank %d: recv from any rank (tag %d, %zu-byte buffer)", rank_, op.tag, op.bytes);
  return strprintf("rank %d: recv from rank %d (tag %d, %zu-byte buffer)", rank_, op.peer, op.tag, op.bytes);
}

// Every op ends here: its Work, and its flight record.
void P2PEngine::complete(P2POp& op, bool ok, ErrorKind kind, const std::string& why) {
  flight_.ended(op.seq, ok, why);
  if (ok) op.work->finish();
  else op.work->fail(kind, why);
}

void P2PEngine::finish(P2POp& op) {
  active_.remove_if([&](const std::shared_ptr<P2POp>& o) { return o.get() == &op; });
  complete(op, true);
}

void P2PEngine::fail(P2POp& op, ErrorKind kind, const std::string& why) {
  if (op.work->is_completed()) return;
  active_.remove_if([&](const std::shared_ptr<P2POp>& o) { return o.get() == &op; });
  posted_.remove_if([&](const std::shared_ptr<P2POp>& o) { return o.get() == &op; });
  for (int p = 0; p < size_; ++p) {  // never write into its buffer again
    Incoming& in = *in_[p];
    if (in.op.get() == &op) {
      in.op.reset();
      in.dst = nullptr;
    }
  }
  complete(op, false, kind, why);
}

void P2PEngine::fail_peer(int peer, ErrorKind kind, const std::string& why) {
  if (dead_[peer].empty()) dead_[peer] = why;
  std::vector<std::shared_ptr<P2POp>> hit;
  for (auto& op : active_)
    if (op->peer == peer || op->source == peer) hit.push_back(op);
  for (auto& op : posted_)
    if (op->peer == peer) hit.push_back(op);
  for (auto& m : out_[peer])
    if (m->op) hit.push_back(m->op);
  out_[peer].clear();
  for (auto& op : hit) fail(*op, kind, what(*op) + ": " + why);
}

void P2PEngine::fail_all(ErrorKind kind, const std::string& why) {
  auto lk = enter();
  broken_ = true;
  broken_kind_ = kind;
  broken_why_ = why;
  std::vector<std::shared_ptr<P2POp>> all(posted_.begin(), posted_.end());
  all.insert(all.end(), active_.begin(), active_.end());
  for (auto& op : all) fail(*op, kind, what(*op) + ": " + why);
}

void P2PEngine::abort(ErrorKind kind, const std::string& why) {
  tr_->abort_self(kind, why);  // wakes a thread blocked in the transport
  tr_->abort_peers(kind, why);
  fail_all(kind, why);
}

// Answers message `m` (CTS, NACK, FIN, HELP, PUSH, PUSHED) with `recv_bytes` and `addr` (their meanings by
// kind: Header).
void P2PEngine::reply(int peer, int kind, const Offer& m, size_t recv_bytes, uint64_t addr) {
  if (peer == rank_) return;  // a message to self is already complete
  auto o = std::make_unique<Out>();
  o->h.magic = kMagic;
  o->h.kind = static_cast<uint8_t>(kind);
  o->h.src = rank_;
  o->h.tag = m.tag;
  o->h.msg = m.msg;
  o->h.seq = m.seq;
  o->h.bytes = m.bytes;
  o->h.recv_bytes = recv_bytes;
  o->h.addr = addr;
  if (addr) o->h.pid = static_cast<int32_t>(getpid());
  out_[peer].push_back(std::move(o));
}

// A receive takes message `m` from `peer`: the sizes must agree (a shorter
// message only with allow_shorter). When they do not, the receive fails and
// the message is refused (NACK), which fails its send on the sender too.
void P2PEngine::accept(int peer, const std::shared_ptr<P2POp>& op, const Offer& m) {
  const size_t bytes = m.bytes;
  op->source = peer;
  if (bytes > op->bytes || (bytes < op->bytes && !op->allow_shorter)) {
    std::string why = strprintf("%s: rank %d sent %zu bytes with tag %d%s", what(*op).c_str(), peer, bytes, m.tag,
                                bytes < op->bytes ? " (pass allow_shorter=True to take a shorter message)" : "");
    reply(peer, kNack, m, op->bytes);
    fail(*op, ErrorKind::kMismatch, why);
    return;
  }
  op->received = bytes;
  op->msg = m.msg;
  if (m.kind == kRts) {
    if (m.addr && single_copy_[peer] && copy_in(peer, op, m)) return;
    reply(peer, kCts, m, op->bytes);
    op->stage = kWaitData;
    active_.push_back(op);
  }
}

void P2PEngine::post(const std::vector<std::shared_ptr<P2POp>>& ops) {
  auto lk = enter();
  for (const auto& op : ops) {
    op->seq = next_seq_++;
    flight_.posted(op->seq, op->send, op->peer, op->tag, op->dtype, op->bytes / dtype_size(op->dtype));
    if (broken_) {
      complete(*op, false, broken_kind_, what(*op) + ": " + broken_why_);
      continue;
    }
    const int peer = op->peer;
    if (peer != kAnySource && !dead_[peer].empty()) {
      complete(*op, false, ErrorKind::kPeerLost, what(*op) + ": " + dead_[peer]);
      continue;
    }
    if (peer != kAnySource && !refused_[peer].empty()) {
      complete(*op, false, ErrorKind::kMismatch, what(*op) + " not started: " + refused_[peer]);
      refused_[peer].clear();
      continue;
    }
    if (op->send && peer == rank_) {  // to self: waits, copied, as an eager message
      Unexpected u;
      u.peer = rank_;
      u.tag = op->tag;
      u.msg = next_msg_[rank_]++;
      u.bytes = op->bytes;
      u.complete = true;
      u.data.assign(op->buf, op->buf + op->bytes);
      unexpected_.push_back(std::move(u));
      complete(*op, true);
      // A posted receive may take it now.
      for (auto it = posted_.begin(); it != posted_.end(); ++it) {
        if (((*it)->peer == rank_ || (*it)->peer == kAnySource) && (*it)->tag == op->tag) {
          auto recv = *it;
          posted_.erase(it);
          match_posted(recv);
          break;
        }
      }
      continue;
    }
    if (op->send) {
      op->msg = next_msg_[peer]++;
      auto m = std::make_unique<Out>();
      m->h.magic = kMagic;
      m->h.src = rank_;
      m->h.tag = op->tag;
      m->h.msg = op->msg;
      m->h.seq = send_seq_[peer][op->tag]++;
      m->h.bytes = op->bytes;
      if (op->bytes <= eager_bytes_) {
        m->h.kind = kEager;
        m->payload = op->buf;
        m->op = op;
      } else {
        m->h.kind = kRts;
        if (single_copy_[peer]) {
          m->h.addr = reinterpret_cast<uintptr_t>(op->buf);
          m->h.pid = static_cast<int32_t>(getpid());
        }
        op->stage = kWaitCts;
      }
      active_.push_back(op);
      out_[peer].push_back(std::move(m));
      continue;
    }
    match_posted(op);
  }
  try {
    progress_locked();
  } catch (const CommError&) {
  }
}

// A new receive: the first matching message that already arrived, else it
// waits in posted_.
void P2PEngine::match_posted(const std::shared_ptr<P2POp>& op) {
  for (auto it = unexpected_.begin(); it != unexpected_.end(); ++it) {
    Unexpected& u = *it;
    if (u.claimed || u.drop || u.tag != op->tag || (op->peer != kAnySource && u.peer != op->peer)) continue;
    const int peer = u.peer;
    accept(peer, op, Offer{u.rts ? kRts : kEager, u.msg, u.seq, u.tag, u.bytes, u.addr, u.pid, u.help});
    if (op->work->is_completed() || u.rts) {  // refused, or copying (single copy), or waiting for DATA
      if (u.complete || u.rts) unexpected_.erase(it);
      else u.drop = true;
      return;
    }
    if (u.complete) {
      kernels::copy(op->buf, u.data.data(), u.bytes);
      unexpected_.erase(it);
      complete(*op, true);
    } else {
      u.claimed = op;  // copied once its last byte is in
      active_.push_back(op);
    }
    return;
  }
  posted_.push_back(op);
}

void P2PEngine::on_header(int peer, const uint8_t* bytes) {
  Header h;
  std::memcpy(&h, bytes, sizeof(h));
  if (h.magic != kMagic || h.src != peer || h.kind < kEager || h.kind > kPushed)
    throw_error(ErrorKind::kComm, strprintf("rank %d: corrupt point-to-point header from rank %d", rank_, peer));
  Incoming& in = *in_[peer];
  in.open = true;
  in.done = 0;
  in.bytes = (h.kind == kEager || h.kind == kData) ? h.bytes : 0;
  in.channel = h.kind == kData && h.bytes >= tr_->payload_min();
  in.dst = nullptr;
  in.op.reset();
  in.to_unexpected = false;
  auto find_active = [&](bool send) -> std::shared_ptr<P2POp> {
    for (auto& op : active_)
      if (op->send == send && op->msg == h.msg && (send ? op->peer : op->source) == peer) return op;
    return nullptr;
  };
  switch (h.kind) {
    case kEager:
    case kRts: {
      // The link keeps order, so this can only fail on a broken link or
      // engine; caught here, not as a wrong receive matched.
      const uint64_t want = recv_seq_[peer][h.tag]++;
      if (h.seq != want)
        throw_error(ErrorKind::kComm,
                    strprintf("rank %d: message %llu with tag %d from rank %d arrived where %llu was due", rank_,
                              static_cast<unsigned long long>(h.seq), h.tag, peer,
                              static_cast<unsigned long long>(want)));
      std::shared_ptr<P2POp> op;
      for (auto it = posted_.begin(); it != posted_.end(); ++it) {
        if ((*it)->tag == h.tag && ((*it)->peer == peer || (*it)->peer == kAnySource)) {
          op = *it;
          posted_.erase(it);
          break;
        }
      }
      if (op) {
        accept(peer, op, Offer{h.kind, h.msg, h.seq, h.tag, h.bytes, h.addr, h.pid});
        if (h.kind == kEager && !op->work->is_completed()) {
          in.dst = op->buf;
          in.op = op;
          op->stage = kReading;
          active_.push_back(op);
        }
        return;
      }
      Unexpected u;
      u.peer = peer;
      u.tag = h.tag;
      u.msg = h.msg;
      u.seq = h.seq;
      u.bytes = h.bytes;
      u.rts = h.kind == kRts;
      u.addr = h.addr;
      u.pid = h.pid;
      u.complete = u.rts;
      if (!u.rts) u.data.resize(h.bytes);
      unexpected_.push_back(std::move(u));
      if (!unexpected_.back().rts) {
        in.unexpected = std::prev(unexpected_.end());
        in.to_unexpected = true;
        in.dst = in.unexpected->data.data();
      }
      return;
    }
    case kData: {
      auto op = find_active(false);
      if (op && op->stage == kWaitData) {
        op->stage = kReading;
        in.op = op;
        in.dst = op->buf;
      }
      return;  // else its receive failed meanwhile: thrown away
    }
    case kCts: {
      auto op = find_active(true);
      if (!op || op->stage != kWaitCts) return;
      op->stage = kSending;
      auto m = std::make_unique<Out>();
      m->h.magic = kMagic;
      m->h.kind = kData;
      m->h.src = rank_;
      m->h.tag = op->tag;
      m->h.msg = op->msg;
      m->h.bytes = op->bytes;
      m->payload = op->buf;
      m->channel = op->bytes >= tr_->payload_min();
      m->op = op;
      out_[peer].push_back(std::move(m));
      return;
    }
    case kFin: {  // the receiver is done with our memory
      auto op = find_active(true);
      if (op && op->stage == kWaitCts) finish(*op);
      return;
    }
    case kHelp: {
      if (auto op = find_active(false)) return on_help(peer, *op);
      for (Unexpected& u : unexpected_)  // not taken yet: the receive that takes it splits at once
        if (u.rts && u.peer == peer && u.msg == h.msg) u.help = true;
      return;
    }
    case kPush:
      return on_push(peer, find_active(true).get(), bytes);
    case kPushed: {
      if (auto op = find_active(false)) on_pushed(peer, *op, h.recv_bytes);
      return;
    }
    case kNack: {
      const std::string why = strprintf("rank %d's receive takes %llu bytes", peer,
                                        static_cast<unsigned long long>(h.recv_bytes));
      if (auto op = find_active(true)) return fail(*op, ErrorKind::kMismatch, what(*op) + ": " + why);
      // An eager send completed before its receive refused it: the refusal
      // fails this rank's first op with that peer not yet matched (a
      // receive posted now, else the next one posted).
      refused_[peer] = strprintf("rank %d: send to rank %d (tag %d, %llu bytes, #%llu with that tag) was refused "
                                 "after it completed: %s",
                                 rank_, peer, h.tag, static_cast<unsigned long long>(h.bytes),
                                 static_cast<unsigned long long>(h.seq), why.c_str());
      for (auto& op : posted_) {
        if (op->peer != peer) continue;
        std::shared_ptr<P2POp> hit = op;
        fail(*hit, ErrorKind::kMismatch, what(*hit) + " not matched: " + refused_[peer]);
        refused_[peer].clear();
        break;
      }
      return;
    }
  }
}

bool P2PEngine::progress_sends(int peer) {
  bool moved = false;
  while (!out_[peer].empty()) {
    Out& m = *out_[peer].front();
    const size_t total = m.total();
    while (m.sent < sizeof(Header)) {
      const auto* h = reinterpret_cast<const uint8_t*>(&m.h);
      const size_t want = sizeof(Header) - m.sent;
      const size_t n = tr_->try_send(peer, h + m.sent, want, want);
      if (n == 0) return moved;
      m.sent += n;
      moved = true;
    }
    while (m.sent < total) {
      const size_t at = m.sent - sizeof(Header);
      const size_t n = m.channel ? tr_->send_payload(peer, m.payload, m.h.bytes, at, m.h.bytes) - at
                                 : tr_->try_send(peer, m.payload + at, std::min<size_t>(total - m.sent, 1 << 20), 1);
      if (n == 0) return moved;
      m.sent += n;
      moved = true;
    }
    if (m.channel && !tr_->payload_sent(peer)) return moved;  // it reads our buffer until the peer has it
    tr_->end_send(peer);
    std::shared_ptr<P2POp> op = std::move(m.op);
    out_[peer].pop_front();
    if (op) finish(*op);
    moved = true;
  }
  return moved;
}

bool P2PEngine::progress_recv(int peer) {
  bool moved = false;
  for (;;) {
    Incoming& in = *in_[peer];
    if (!in.open) {
      Span sp = tr_->peek(peer);
      if (sp.size < sizeof(Header)) return moved;
      on_header(peer, sp.data);
      tr_->consume(peer, sizeof(Header));
      moved = true;
    }
    while (in.done < in.bytes) {
      const size_t want = in.bytes - in.done;
      size_t n;
      if (in.channel) {  // lands in the destination, or in transport memory when thrown away
        Span sp = tr_->recv_payload(peer, in.dst, in.bytes, in.done, false);
        n = sp.size;
        if (n) tr_->consume_payload(peer, n);
      } else if (in.dst) {
        n = tr_->try_recv_into(peer, in.dst + in.done, want, 1);
      } else {  // thrown away
        Span sp = tr_->peek(peer);
        n = std::min(sp.size, want);
        if (n) tr_->consume(peer, n);
      }
      if (n == 0) return moved;
      in.done += n;
      moved = true;
    }
    tr_->end_recv(peer);
    in.open = false;
    if (in.op) {
      std::shared_ptr<P2POp> op = std::move(in.op);
      finish(*op);
    } else if (in.to_unexpected) {
      auto it = in.unexpected;
      it->complete = true;
      if (it->drop) {
        unexpected_.erase(it);
      } else if (it->claimed) {
        std::shared_ptr<P2POp> op = std::move(it->claimed);
        kernels::copy(op->buf, it->data.data(), it->bytes);
        unexpected_.erase(it);
        finish(*op);
      }
    }
  }
}

void P2PEngine::progress_locked() {
  for (bool moved = true; moved;) {
    moved = false;
    for (int p = 0; p < size_; ++p) {
      if (p == rank_ || !dead_[p].empty()) continue;
      try {
        moved |= progress_sends(p);
        moved |= progress_recv(p);
      } catch (const CommError& e) {
        if (e.kind() == ErrorKind::kPeerLost || e.kind() == ErrorKind::kComm) {
          fail_peer(p, e.kind(), e.what());
        } else {
          throw;
        }
      }
    }
    moved |= copy_some();
  }
}

void P2PEngine::expire() {
  std::vector<std::shared_ptr<P2POp>> late;
  for (auto& op : posted_)
    if (op->deadline.expired()) late.push_back(op);
  for (auto& op : active_)
    if (op->deadline.expired()) late.push_back(op);
  for (auto& op : late) {
    if (op->send) {
      // A message not yet begun on the wire is withdrawn; one half written
      // cannot be, and the link to that peer is given up.
      auto& q = out_[op->peer];
      bool half_written = false;
      for (auto it = q.begin(); it != q.end(); ++it) {
        if ((*it)->op != op) continue;
        if ((*it)->sent == 0) {
          q.erase(it);
        } else {
          half_written = true;
        }
        break;
      }
      const std::string why = strprintf("%s: timeout after %g s: rank %d did not take it", what(*op).c_str(),
                                        op->deadline.seconds(), op->peer);
      if (half_written) {
        fail_peer(op->peer, ErrorKind::kTimeout, why);
      } else {
        fail(*op, ErrorKind::kTimeout, why);
      }
    } else {
      fail(*op, ErrorKind::kTimeout,
           strprintf("%s: timeout after %g s: %s", what(*op).c_str(), op->deadline.seconds(),
                     op->stage == kQueued ? "no matching message arrived" : "the message did not finish arriving"));
    }
  }
}

bool P2PEngine::wait(P2POp& op, double timeout_s) {
  const Deadline limit = timeout_s < 0 ? Deadline::never() : Deadline::after(timeout_s);
  auto lk = enter();
  if (timeout_s < 0) offer_help(op);
  std::vector<WaitItem> items;
  for (;;) {
    if (op.work->is_completed()) return true;
    if (wanting_.load() > 0) {  // between slices: whoever waits for the lock gets it first
      lk.unlock();
      while (wanting_.load() > 0) std::this_thread::yield();
      lk = enter();  // counted too: a thread driving now lets us back in after its slice
      if (op.work->is_completed()) return true;
    }
    try {
      progress_locked();
    } catch (const CommError& e) {  // a peer aborted: nothing here can go on
      lk.unlock();
      fail_all(e.kind(), e.what());
      return true;
    }
    expire();
    if (op.work->is_completed()) return true;
    if (limit.expired()) return false;
    if (std::chrono::steady_clock::now() < peer_busy_until_) {  // an answer is near: poll, as MPI's blocking calls do
      std::this_thread::yield();
      continue;
    }
    items.clear();
    for (int p = 0; p < size_; ++p) {
      if (p == rank_ || !dead_[p].empty()) continue;
      const Incoming& in = *in_[p];
      items.push_back({p, false, in.open ? std::min<size_t>(in.bytes - in.done, 64) : sizeof(Header),
                       in.open && in.channel});
      if (!out_[p].empty()) {
        const Out& m = *out_[p].front();
        if (m.channel && m.sent >= sizeof(Header)) {  // room in the channel, or its sends finishing
          items.push_back({p, true, std::min<size_t>(m.total() - m.sent, 1 << 20), true});
        } else {
          items.push_back({p, true, 64});
        }
      }
    }
    if (items.empty()) {  // no live peer: only a deadline can end this
      lk.unlock();
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      lk.lock();
      continue;
    }
    try {
      tr_->wait(items.data(), items.size(), Deadline::after(kWaitSliceS));
    } catch (const CommError& e) {
      if (e.kind() == ErrorKind::kTimeout) continue;
      if (e.kind() != ErrorKind::kPeerLost) {
        lk.unlock();
        fail_all(e.kind(), e.what());
        return true;
      }
      // Which peer: ask each on its own.
      bool found = false;
      for (const WaitItem& it : items) {
        try {
          tr_->wait(&it, 1, Deadline::after(0));
        } catch (const CommError& one) {
          if (one.kind() == ErrorKind::kPeerLost) {
            fail_peer(it.peer, ErrorKind::kPeerLost, one.what());
            found = true;
          }
        }
      }
      if (!found) {
        lk.unlock();
        fail_all(e.kind(), e.what());
        return true;
      }
    }
  }
}

}  // namespace pycomm
