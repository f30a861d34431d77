// The transport interface: byte streams between every pair of ranks, driven
// without blocking so one thread can send to one peer while it receives from
// another (the ring's steady state). Transports know nothing of dtypes or
// collectives; algorithms are written once against this interface.
//
// Messages on a link are delimited by end_send()/end_recv(): both sides call
// them after the same byte count, which lets shared memory keep every message
// 64-byte aligned (so no element ever straddles the ring's wrap point).
//
// A transport may also offer a payload channel: large payloads then travel as
// messages of their own, sent from the sender's buffer and, when they are to
// be copied, received straight into the destination, instead of being staged
// through the byte stream (MPI: one copy between the ranks, as MPI's own
// collectives make, instead of three).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "../common/deadline.h"
#include "../common/error.h"
#include "../kernels/reduce.h"

namespace pycomm {

struct Span {
  const uint8_t* data = nullptr;
  size_t size = 0;
};

// One thing a blocked rank waits for: `bytes` of room toward `peer` (send) or
// of data from `peer` (receive).
struct WaitItem {
  int peer;
  bool send;
  size_t bytes;
  bool payload = false;  // on the payload channel; a send with bytes 0 waits for every payload send to finish
};

class Transport {
 public:
  Transport(int rank, int size) : rank_(rank), size_(size) {}
  virtual ~Transport() = default;
  Transport(const Transport&) = delete;
  Transport& operator=(const Transport&) = delete;

  virtual const char* name() const = 0;
  int rank() const { return rank_; }
  int size() const { return size_; }

  // Copies up to n bytes toward `peer` without blocking. Unless it takes all
  // n, it takes a multiple of `granule`. Returns the bytes taken (maybe 0).
  virtual size_t try_send(int peer, const void* data, size_t n, size_t granule) = 0;

  // Received bytes from `peer`, readable in place until consume().
  virtual Span peek(int peer) = 0;
  virtual void consume(int peer, size_t n) = 0;

  // Copies up to n received bytes into dst, a multiple of `granule` unless all
  // n. The default goes through peek(); TCP reads straight off the socket.
  virtual size_t try_recv_into(int peer, void* dst, size_t n, size_t granule) {
    Span s = peek(peer);
    size_t take = s.size < n ? s.size - s.size % granule : n;
    if (take == 0) return 0;
    kernels::copy(dst, s.data, take);
    consume(peer, take);
    return take;
  }

  virtual void end_send(int peer) {}
  virtual void end_recv(int peer) {}

  // The most payload bytes that ride in the stream with a message's frame
  // (a payload this small then makes one message, not two).
  virtual size_t inline_max() const { return 1024; }

  // The payload channel (optional). Payloads of payload_min() bytes or more
  // use it; their frame still goes through the stream first, so a mismatch
  // is caught before any payload byte lands. Both sides cut a payload into
  // the same messages, so each lands where it belongs.
  virtual size_t payload_min() const { return SIZE_MAX; }
  // Whether every payload of payload_min() bytes or more takes the channel
  // (MPI), or only those of messages an algorithm marks `direct` (shm:
  // single-copy reads, which pay off in pairwise exchanges).
  virtual bool payload_channel_for_all() const { return true; }
  // The smallest `direct` payload the channel moves with sender and receiver
  // each copying a part when the receive asks to `split` (shm with a CPU per
  // rank). SIZE_MAX: never. The same on every rank.
  virtual size_t payload_split_min() const { return SIZE_MAX; }
  // Starts sending bytes [done, ready) of a `total`-byte payload at `data`,
  // as far as it can now; returns the new `done`. The transport reads `data`
  // until payload_sent(peer) says it is done with every such buffer.
  virtual size_t send_payload(int peer, const uint8_t* data, size_t total, size_t done, size_t ready) {
    no_payload_channel();
  }
  virtual bool payload_sent(int peer) { return true; }
  // The payload's next received bytes from offset `done`: placed at dst +
  // done when `dst` is given, else in transport memory; empty while none has
  // arrived. Either way consume_payload() moves past them. `split`: the
  // sender may copy a part (payload_split_min()), which pays off where the
  // receiver alone would copy: a root's messages, not a pairwise exchange.
  virtual Span recv_payload(int peer, uint8_t* dst, size_t total, size_t done, bool split) {
    no_payload_channel();
  }
  virtual void consume_payload(int peer, size_t n) { no_payload_channel(); }
  // After an exchange failed: stop writing into destinations given above.
  virtual void drop_payloads() {}

  // Blocks until any of `items` may be satisfied. Throws kTimeout at the
  // deadline, kPeerLost when a waited-on peer is gone, and the kind a peer
  // aborted with.
  virtual void wait(const WaitItem* items, size_t n, const Deadline& deadline) = 0;

  // Best effort: makes every peer's current and future waits throw `kind`
  // with `reason`. Used when this rank can no longer follow the protocol.
  virtual void abort_peers(ErrorKind kind, const std::string& reason) = 0;
  // Throws if a peer has aborted (cheap; called as each op starts, so a rank
  // that waited for nobody in its last op, like a broadcast root, still hears).
  virtual void poll_abort() = 0;
  // Makes this rank's own current and future waits throw (from any thread).
  virtual void abort_self(ErrorKind kind, const std::string& reason) = 0;
  // Whether `peer`'s process still holds its end of the links (false once it
  // exited or closed them), without waiting: what shrink() agrees on.
  // Transports that cannot tell throw kValue.
  // (Inline, like every default here: a virtual defined in transport.cpp would
  // emit the vtable there, and with it these defaults' kernel calls, into
  // pycomm._mpi, which has no kernels.)
  virtual bool peer_alive(int peer) {
    throw_error(ErrorKind::kValue, std::string("the ") + name() + " transport cannot tell whether a peer is alive");
  }

 protected:
  int rank_;
  int size_;

 private:
  // Without a payload channel (payload_min() SIZE_MAX) nobody calls it.
  [[noreturn]] void no_payload_channel() const {
    throw_error(ErrorKind::kComm, strprintf("the %s transport has no payload channel", name()));
  }
};

// Whether the ranks on this host outnumber its CPUs.
bool oversubscribed(int local_ranks);

// How long a blocked rank spins before it sleeps: `requested` if >= 0, else
// 50 us, or 0 when the ranks on this host outnumber its CPUs. Waking a
// sleeping rank costs 10-50 us (more on a VM whose idle vCPU left the host
// CPU), far more than a small collective.
int spin_budget_us(int requested, int local_ranks);

// How a blocked rank waits on shared memory: `polls` checks between
// sched_yield()s for `spin_us` (`requested` if >= 0), then it sleeps until a
// peer rings. With no more local ranks than CPUs: 256 checks, 50 us. With
// more, the rank we wait for may need our CPU: one check per yield, 100 us.
// Sleeping at once there cost a wake-up through the scheduler per message:
// at 3 and 4 ranks on 2 cores an 8 B allreduce took 69-80 us that way and
// 20-39 us yielding (bench/RESULTS.md, issue 22).
struct WaitPolicy {
  int spin_us = 50;
  int polls = 256;
};
WaitPolicy wait_policy(int requested, int local_ranks);

// "rank 1: timeout after 30 s waiting for data from rank 0 or room toward rank 2"
// (" timeout " as gloo's messages have it: torch's tests match on it)
std::string describe_wait(int rank, const WaitItem* items, size_t n, const Deadline& deadline);

}  // namespace pycomm
