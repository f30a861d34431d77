#include "exchange.h"

#include <algorithm>

#include "../kernels/reduce.h"

namespace pycomm {
namespace {

constexpr uint32_t kFrameMagic = 0x4d524650;  // "PFRM"
constexpr uint8_t kFlagDevice = 1;

struct Frame {
  uint32_t magic;
  uint8_t coll, dtype, op, flags;  // flags: kFlagDevice
  uint64_t seq;
  int32_t root;
  int32_t src;
  uint64_t count;
  uint64_t payload;
  uint32_t block_size;
  uint8_t reserved[20];
};
static_assert(sizeof(Frame) == 64, "frames keep shm messages 64-byte aligned");

Frame make_frame(const OpStamp& s, int src, size_t payload) {
  Frame f{};
  f.magic = kFrameMagic;
  f.coll = static_cast<uint8_t>(s.coll);
  f.dtype = static_cast<uint8_t>(s.dtype);
  f.op = static_cast<uint8_t>(s.op);
  f.seq = s.seq;
  f.root = s.root;
  f.src = src;
  f.count = s.count;
  f.payload = payload;
  f.block_size = s.block_size;
  f.flags = s.device ? kFlagDevice : 0;
  return f;
}

}  // namespace

std::string describe(const OpStamp& s) {
  const OpInfo& info = op_info(s.coll);
  std::string d = strprintf("%s #%llu", info.name, static_cast<unsigned long long>(s.seq));
  if (info.in == Extent::kNone && info.out == Extent::kNone) return d;
  d += strprintf(" (%s x %llu", dtype_name(s.dtype), static_cast<unsigned long long>(s.count));
  if (info.reduces) d += std::string(", ") + redop_name(s.op);
  if (info.int8) d += strprintf(", block %u", s.block_size);
  if (s.device) d += ", GPU buffers";
  if (info.rooted) d += strprintf(", root %d", s.root);
  return d + ")";
}

std::string PeerProgress::behind(uint64_t seq, int self) const {
  std::string out;
  for (size_t p = 0; p < heard.size(); ++p) {
    if (static_cast<int>(p) == self || heard[p] > seq) continue;
    if (!out.empty()) out += ", ";
    out += heard[p] ? strprintf("rank %zu (last heard in #%llu)", p, static_cast<unsigned long long>(heard[p] - 1))
                    : strprintf("rank %zu (never heard)", p);
  }
  return out;
}

void OpContext::check_frame(const uint8_t* bytes, const RecvSpec& r) {
  Frame f;
  std::memcpy(&f, bytes, sizeof(f));
  if (progress && f.magic == kFrameMagic && f.src == r.peer &&
      static_cast<size_t>(r.peer) < progress->heard.size())
    progress->heard[r.peer] = std::max(progress->heard[r.peer], f.seq + 1);
  if (f.magic != kFrameMagic || f.src != r.peer || f.coll < 1 || f.coll >= kNumColls ||
      f.dtype >= kNumDTypes || f.op >= kNumRedOps)
    throw_error(ErrorKind::kComm, strprintf("rank %d: corrupt frame from rank %d during %s", rank(),
                                            r.peer, describe(stamp).c_str()));
  OpStamp theirs;
  theirs.seq = f.seq;
  theirs.coll = static_cast<Coll>(f.coll);
  theirs.dtype = static_cast<DType>(f.dtype);
  theirs.op = static_cast<RedOp>(f.op);
  theirs.root = f.root;
  theirs.count = f.count;
  theirs.block_size = f.block_size;
  theirs.device = (f.flags & kFlagDevice) != 0;
  bool same = theirs.seq == stamp.seq && theirs.coll == stamp.coll && theirs.dtype == stamp.dtype &&
              theirs.op == stamp.op && theirs.root == stamp.root && theirs.count == stamp.count &&
              theirs.block_size == stamp.block_size && theirs.device == stamp.device &&
              f.payload == r.bytes;
  if (!same) {
    std::string msg = strprintf("collective mismatch between rank %d and rank %d: rank %d called %s, "
                                "rank %d called %s",
                                rank(), r.peer, rank(), describe(stamp).c_str(), r.peer, describe(theirs).c_str());
    if (f.payload != r.bytes)  // the uneven forms: the counts of one pair disagree
      msg += strprintf("; rank %d sends %llu bytes where rank %d expects %zu", r.peer,
                       static_cast<unsigned long long>(f.payload), rank(), r.bytes);
    throw_error(ErrorKind::kMismatch, msg);
  }
}

void OpContext::sync_peers() {
  std::vector<SendSpec> sends;
  std::vector<RecvSpec> recvs;
  for (int p = 0; p < size(); ++p) {
    if (p == rank()) continue;
    sends.push_back({p, nullptr, 0});
    recvs.push_back({p, 0, Sink{}});
  }
  exchange(sends.data(), sends.size(), recvs.data(), recvs.size());
}

bool OpContext::progress_send(SendSpec& s, std::vector<WaitItem>& waits) {
  bool moved = false;
  size_t limit = s.ready ? std::min(*s.ready, s.bytes) : s.bytes;
  if (s.frame_sent < sizeof(Frame)) {
    // The frame goes whole into shared memory; a socket may take part of it.
    // The payload's first bytes ride in the same call: a small payload then
    // makes one message on the wire, not two. (The payload channel takes a
    // payload whole.)
    const size_t inline_max = tr.inline_max();
    frame_buf_.resize(sizeof(Frame) + inline_max);
    uint8_t* buf = frame_buf_.data();
    Frame f = make_frame(stamp, rank(), s.bytes);
    std::memcpy(buf, &f, sizeof(f));
    size_t inline_bytes = s.frame_sent == 0 && !use_channel(s.bytes, s.direct) ? std::min(limit, inline_max) : 0;
    if (inline_bytes) std::memcpy(buf + sizeof(f), s.data, inline_bytes);
    size_t want = sizeof(f) - s.frame_sent + inline_bytes;
    size_t n = tr.try_send(s.peer, buf + s.frame_sent, want, want);
    size_t framed = std::min(n, sizeof(f) - s.frame_sent);
    s.frame_sent += framed;
    s.done += n - framed;
    moved = n > 0;
    if (s.frame_sent < sizeof(f)) {  // shared memory takes all `want` bytes or none
      waits.push_back({s.peer, true, n ? sizeof(f) - s.frame_sent : want});
      return moved;
    }
  }
  const bool channel = use_channel(s.bytes, s.direct);
  if (s.done < limit) {
    size_t n = channel ? tr.send_payload(s.peer, s.data, s.bytes, s.done, limit) - s.done
                       : tr.try_send(s.peer, s.data + s.done, std::min(limit - s.done, tuning.slice_bytes),
                                     granule());
    s.done += n;
    moved |= n > 0;
    // The channel sends whole messages only: short of one, a forwarding
    // send waits on the receive that feeds it, which is in this exchange.
    if (s.done < limit && (!channel || limit == s.bytes))
      waits.push_back({s.peer, true, std::min(limit - s.done, tuning.slice_bytes), channel});
  }
  if (s.done == s.bytes && !s.ended) {
    // The payload channel reads the caller's buffer until the peer has it.
    if (channel && !tr.payload_sent(s.peer)) {
      waits.push_back({s.peer, true, 0, true});
      return moved;
    }
    tr.end_send(s.peer);
    s.ended = true;
  }
  return moved;
}

bool OpContext::progress_recv(RecvSpec& r, std::vector<WaitItem>& waits) {
  bool moved = false;
  if (!r.framed) {
    Span sp = tr.peek(r.peer);
    if (sp.size < sizeof(Frame)) {
      waits.push_back({r.peer, false, sizeof(Frame)});
      return false;
    }
    check_frame(sp.data, r);
    tr.consume(r.peer, sizeof(Frame));
    r.framed = moved = true;
  }
  const bool channel = use_channel(r.bytes, r.direct);
  while (r.done < r.bytes) {
    size_t want = r.bytes - r.done, n;
    if (channel) {  // copies land in place; reductions read the transport's memory
      Span sp = tr.recv_payload(r.peer, r.sink.own ? nullptr : r.sink.dst, r.bytes, r.done, r.split);
      n = sp.size;
      if (n && r.sink.own)
        kernels::reduce(r.sink.dst + r.done, r.sink.own + r.done, sp.data, n / elem(), stamp.dtype, stamp.op);
      if (n) tr.consume_payload(r.peer, n);
    } else if (!r.sink.own) {
      n = tr.try_recv_into(r.peer, r.sink.dst + r.done, want, 1);
    } else {  // fused receive-reduce straight out of the transport's buffer
      Span sp = tr.peek(r.peer);
      n = sp.size >= want ? want : sp.size - sp.size % elem();
      if (n) {
        kernels::reduce(r.sink.dst + r.done, r.sink.own + r.done, sp.data, n / elem(), stamp.dtype,
                        stamp.op);
        tr.consume(r.peer, n);
      }
    }
    if (n == 0) {
      waits.push_back({r.peer, false, std::min(want, elem()), channel});
      break;
    }
    r.done += n;
    moved = true;
  }
  if (r.done == r.bytes && !r.ended) {
    tr.end_recv(r.peer);
    r.ended = true;
  }
  return moved;
}

bool OpContext::use_channel(size_t bytes, bool direct) const {
  // Both sides of a message decide alike: the same size, the same algorithm.
  return bytes >= tr.payload_min() && (direct || tr.payload_channel_for_all());
}

void OpContext::exchange(SendSpec* sends, size_t nsends, RecvSpec* recvs, size_t nrecvs) {
  try {
    run_exchange(sends, nsends, recvs, nrecvs);
  } catch (...) {
    tr.drop_payloads();  // the caller's buffers are about to be given back
    throw;
  }
}

void OpContext::run_exchange(SendSpec* sends, size_t nsends, RecvSpec* recvs, size_t nrecvs) {
  std::vector<WaitItem> waits;
  waits.reserve(nsends + nrecvs);
  for (;;) {
    waits.clear();
    bool moved = false, pending = false;
    for (size_t i = 0; i < nsends; ++i) {
      if (sends[i].ended) continue;
      moved |= progress_send(sends[i], waits);
      pending |= !sends[i].ended;
    }
    for (size_t i = 0; i < nrecvs; ++i) {
      if (recvs[i].ended) continue;
      moved |= progress_recv(recvs[i], waits);
      pending |= !recvs[i].ended;
    }
    if (!pending) return;
    if (!moved && !waits.empty()) tr.wait(waits.data(), waits.size(), deadline);
  }
}

void OpContext::sendrecv(int to, const void* src, size_t send_bytes, int from, size_t recv_bytes,
                         Sink sink) {
  SendSpec s{to, static_cast<const uint8_t*>(src), send_bytes};
  RecvSpec r{from, recv_bytes, sink};
  exchange(&s, 1, &r, 1);
}

}  // namespace pycomm
