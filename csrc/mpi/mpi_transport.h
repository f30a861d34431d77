// MPI transport: pycomm's byte streams over MPI point-to-point, for
// interconnects pycomm does not drive itself (InfiniBand or UCX behind the
// MPI library). Built only against the MPI that mpi4py uses, into its own
// extension (pycomm._mpi), which hands the transport to the core; the rest of
// pycomm builds and runs without MPI.
//
// Each direction of a link is a small ring of `slots` staging buffers of
// `chunk_bytes`: try_send copies into a free slot and starts an MPI_Isend
// from it; the receiver keeps MPI_Irecv posted into its slots and reads each
// message in place. MPI delivers messages between two ranks on one
// communicator and tag in order, and matches them to receives in the order
// those were posted, so cycling through the slots keeps the stream in order.
// Messages never exceed chunk_bytes, which both sides agree on.
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
  size_t chunk_bytes = 512 << 10;  // the largest message; every rank must use the same
  int slots = 4;                   // staging buffers per direction and peer
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
  void wait(const WaitItem* items, size_t n, const Deadline& deadline) override;
  void abort_peers(ErrorKind kind, const std::string& reason) override;
  void abort_self(ErrorKind kind, const std::string& reason) override;
  void poll_abort() override;

 private:
  struct Slot {
    std::unique_ptr<uint8_t[]> buf;
    MPI_Request req = MPI_REQUEST_NULL;
    size_t size = 0;  // receive: bytes in the completed message
    size_t off = 0;   // receive: bytes already consumed
  };
  struct Link {
    std::vector<Slot> send, recv;
    size_t send_first = 0, send_busy = 0;  // oldest slot in flight, slots in flight
    size_t recv_head = 0;                  // the slot the stream continues in
    bool recv_posted = false;              // receives are posted on first use
  };

  bool send_room(int peer);
  Slot* ready_message(int peer);
  void post_recv(int peer, Slot& s);
  void check(int rc, const char* what, int peer) const;
  void check_abort();

  MPI_Comm comm_ = MPI_COMM_NULL;
  int data_tag_ = 0, abort_tag_ = 0;  // this transport's, the same on every rank
  MpiOptions opts_;
  int spin_us_ = 0;
  std::vector<Link> links_;  // indexed by rank

  // Aborts: a peer's arrives as a message on its own tag; ours stay buffered
  // until the destructor, since MPI reads them after abort_peers returns.
  std::mutex abort_mu_;
  std::vector<std::pair<std::unique_ptr<std::string>, MPI_Request>> sent_aborts_;
  std::atomic<bool> self_aborted_{false};
  ErrorKind self_abort_kind_ = ErrorKind::kAborted;
  std::string self_abort_reason_;
};

}  // namespace pycomm
