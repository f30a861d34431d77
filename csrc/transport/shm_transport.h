// Shared-memory transport for ranks on one host.
//
// Each rank creates one segment holding its doorbell, its abort slot and one
// single-producer/single-consumer ring per incoming peer; senders copy into
// the receiver's ring, so the receiver reduces straight out of its own memory.
// Segments are mode 0600 with random names and are unlinked as soon as every
// peer has mapped them: a crash leaks nothing. Waits spin briefly, then sleep
// on the receiver's doorbell futex.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "bootstrap.h"
#include "transport.h"

namespace pycomm {

struct ShmOptions {
  size_t ring_bytes = 1 << 20;  // per incoming peer; a multiple of 64
  int spin_us = -1;             // see spin_budget_us()
  int local_ranks = 0;          // ranks sharing this host's CPUs (0: all)
};

class ShmTransport final : public Transport {
 public:
  ShmTransport(int rank, int size, const BootstrapAllgather& allgather, const ShmOptions& opts);
  ~ShmTransport() override;

  const char* name() const override { return "shm"; }
  size_t try_send(int peer, const void* data, size_t n, size_t granule) override;
  Span peek(int peer) override;
  void consume(int peer, size_t n) override;
  void end_send(int peer) override;
  void end_recv(int peer) override;
  void wait(const WaitItem* items, size_t n, const Deadline& deadline) override;
  void abort_peers(ErrorKind kind, const std::string& reason) override;
  void abort_self(ErrorKind kind, const std::string& reason) override;
  void poll_abort() override { check_abort(); }
  bool peer_alive(int peer) override;

 private:
  struct Segment;  // one mapped segment (ours or a peer's)
  size_t room(int peer);
  size_t available(int peer);
  void ring_bell(int peer);
  void check_abort();
  void check_alive(int peer);
  void post_abort(int rank, ErrorKind kind, const std::string& reason);

  ShmOptions opts_;
  WaitPolicy wait_{};
  std::vector<std::unique_ptr<Segment>> segs_;  // indexed by rank
  // Counters this rank alone writes, cached to avoid reading shared lines.
  std::vector<uint64_t> send_head_, send_pad_, recv_tail_, recv_pad_;
};

}  // namespace pycomm
