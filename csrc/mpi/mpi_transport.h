// MPI transport: pycomm's byte streams over MPI point-to-point, for
// interconnects pycomm does not drive itself (InfiniBand or UCX behind the
// MPI library). Built only against the MPI that mpi4py uses, into its own
// extension (pycomm._mpi), which hands the transport to the core; the rest of
// pycomm builds and runs without MPI.
//
// The byte stream (frames, small payloads) is cut into messages MPI sends
// eagerly (a larger one costs a rendezvous round trip). Each direction of a
// link is a small ring of `slots` staging buffers: try_send copies into a
// free one and starts an MPI_Isend from it; the receiver keeps MPI_Irecv
// posted into its own and reads each message in place. MPI delivers
// messages between two ranks on one communicator and tag in order, and
// matches them to receives in the order those were posted, so cycling
// through the slots keeps the stream in order.
//
// Payloads of channel_bytes or more take the payload channel, on a tag of
// their own: messages of chunk_bytes (the last one shorter) sent straight
// from the caller's buffer, and received straight into the destination of a
// copy or into staging slots for a reduction, up to `slots` posted ahead.
// Both sides know the payload's size from its frame, so the receives posted
// are exactly the messages the sender cuts; with Open MPI's single-copy
// shared memory (CMA) each byte then moves once between the ranks.
#pragma once

#include <mpi.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "../transport/transport.h"

namespace pycomm {

struct MpiOptions {
  // Every rank must use the same values.
  size_t chunk_bytes = 1 << 20;  // payload channel: bytes per message
  int slots = 4;                   // messages in flight per direction and peer
  // The largest message MPI sends eagerly: Open MPI's shared memory takes
  // 4096 bytes with its header. Stream messages are no larger.
  size_t eager_bytes = 4016;
  size_t channel_bytes = 16 << 10;  // payloads this big take the payload channel
  int spin_us = -1;                // see spin_budget_us()
  int local_ranks = 0;             // ranks sharing this host's CPUs (0: all)
};

class MpiTransport final : public Transport {
 public:
  // Duplicates `comm` (collective over it), so pycomm's traffic never
  // matches the program's own receives. Needs MPI_THREAD_MULTIPLE: ops run on
  // pycomm's worker thread while the program may call MPI itself.
  MpiTransport(MPI_Comm comm, const MpiOptions& opts);
  ~MpiTransport() override;

  const char* name() const override { return "mpi"; }
  size_t try_send(int peer, const void* data, size_t n, size_t granule) override;
  Span peek(int peer) override;
  void consume(int peer, size_t n) override;
  size_t try_recv_into(int peer, void* dst, size_t n, size_t granule) override;
  size_t inline_max() const override { return opts_.eager_bytes - 64; }  // less the frame
  size_t payload_min() const override { return opts_.channel_bytes; }
  size_t send_payload(int peer, const uint8_t* data, size_t total, size_t done, size_t ready) override;
  bool payload_sent(int peer) override;
  Span recv_payload(int peer, uint8_t* dst, size_t total, size_t done, bool split) override;
  void consume_payload(int peer, size_t n) override;
  void drop_payloads() override;
  void wait(const WaitItem* items, size_t n, const Deadline& deadline) override;
  void abort_peers(ErrorKind kind, const std::string& reason) override;
  void abort_self(ErrorKind kind, const std::string& reason) override;
  void poll_abort() override;

 private:
  struct Slot {  // a stream receive buffer and its message
    std::unique_ptr<uint8_t[]> buf;
    MPI_Request req = MPI_REQUEST_NULL;
    size_t size = 0;  // bytes in the completed message
    size_t off = 0;   // bytes already consumed
  };
  // Sends in flight on one link: they complete in any order, and reaping the
  // oldest first is enough to know when room frees up.
  struct Sends {
    std::vector<MPI_Request> req;
    size_t first = 0, busy = 0;
    size_t next() const { return (first + busy) % req.size(); }
  };
  // A payload receive: into the destination or a staging slot.
  struct Posted {
    MPI_Request req = MPI_REQUEST_NULL;
    uint8_t* at = nullptr;
    size_t size = 0, off = 0;
    bool arrived = false;
  };
  struct Link {
    // The stream: sends from send_buf[i] under send.req[i]; receives posted
    // into every slot on the link's first use, read in turn from recv_head.
    Sends send;
    std::vector<std::unique_ptr<uint8_t[]>> send_buf;
    std::vector<Slot> recv;
    size_t recv_head = 0;
    bool recv_posted = false;

    // The payload channel: sends from the caller's buffers; receives of the
    // current payload posted in order from in_head, those of reductions into
    // in_slots[i] for ring entry i.
    Sends out;
    std::vector<Posted> in;
    size_t in_head = 0, in_busy = 0;
    size_t in_posted = 0;  // payload bytes covered by the receives posted so far
    std::vector<std::unique_ptr<uint8_t[]>> in_slots;
  };

  size_t reap(Sends& s, int peer);  // returns the sends still in flight
  bool send_room(int peer);
  Slot* ready_message(int peer);
  Posted* payload_arrived(int peer);
  bool ready(const WaitItem& w);  // whether a wait for `w` is over
  void drain();
  void post_recv(int peer, Slot& s);
  void check(int rc, const char* what, int peer) const;
  void check_abort();

  MPI_Comm comm_ = MPI_COMM_NULL;
  int data_tag_ = 0, abort_tag_ = 0, payload_tag_ = 0;  // this transport's, the same on every rank
  MpiOptions opts_;
  int spin_us_ = 0;
  std::vector<Link> links_;  // indexed by rank
  bool failed_ = false;      // an exchange failed: drain before the communicator is freed (so do aborts)

  // Aborts: a peer's arrives as a message on its own tag; ours stay buffered
  // until the destructor, since MPI reads them after abort_peers returns.
  std::mutex abort_mu_;
  std::vector<std::pair<std::unique_ptr<std::string>, MPI_Request>> sent_aborts_;
  MPI_Request abort_req_ = MPI_REQUEST_NULL;  // a receive for the first peer's abort
  std::vector<char> abort_buf_;
  bool peer_aborted_ = false;
  ErrorKind peer_abort_kind_ = ErrorKind::kAborted;
  std::string peer_abort_reason_;
  std::atomic<bool> self_aborted_{false};
  ErrorKind self_abort_kind_ = ErrorKind::kAborted;
  std::string self_abort_reason_;
};

}  // namespace pycomm
