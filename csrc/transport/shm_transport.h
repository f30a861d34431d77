// Shared-memory transport for ranks on one host.
//
// Each rank creates one segment holding its doorbell, its abort slot and one
// single-producer/single-consumer ring per incoming peer; senders copy into
// the receiver's ring, so the receiver reduces straight out of its own memory.
// Segments are mode 0600 with random names and are unlinked as soon as every
// peer has mapped them: a crash leaks nothing. Waits spin briefly, then sleep
// on the receiver's doorbell futex.
//
// The payload channel (cma_bytes): a large payload of a message its
// algorithm marks `direct` (alltoall's pairwise exchange, gather's and
// scatter's blocks: copied, never reduced or forwarded) is not staged through
// the ring. The sender puts its address in the ring, the receiver copies it
// straight out of the sender's memory (process_vm_readv, cma.h) and
// acknowledges, and the sender's exchange ends once every such payload was
// acknowledged. One copy instead of two, and the sender need not run while
// its payload moves: with more ranks than cores that is what the ranks wait
// on. Split (`split`, where the ranks have a CPU each): a receive that asks
// for it reads the first half while the sender, idle until acknowledged,
// writes the second (process_vm_writev): a root's many messages then move
// at two copies' speed, with no cache line bouncing between the two cores
// as through the ring. On only where every rank could read every
// peer's memory when the transport was built (checked on a random token;
// Yama or a pid namespace may forbid it), so all ranks agree.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "bootstrap.h"
#include "transport.h"

namespace pycomm {

struct ShmOptions {
  size_t ring_bytes = 1 << 20;  // per incoming peer; a multiple of 64
  int spin_us = -1;             // see spin_budget_us()
  int local_ranks = 0;          // ranks sharing this host's CPUs (0: all)
  // `direct` payloads of this many bytes or more take the single-copy
  // channel (below); 0: never; -1: 64 KiB where the ranks on this host
  // outnumber its CPUs, else 1 MiB (with a core each, the two copies through
  // the ring run at once and match one process_vm_readv from there on, beat
  // it by 5-25% below; bench/RESULTS.md, issue 18).
  long long cma_bytes = -1;
  // Whether a sender writes a part of the payloads whose receive asks to
  // split (gather, scatter: Transport::recv_payload): 1 yes, 0 no, -1 where
  // the ranks on this host have a CPU each (else the sender's part would
  // take a CPU the receiver or another rank copies on). On only if every
  // rank says so.
  int split = -1;
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

  size_t payload_min() const override { return cma_ ? cma_min_ : SIZE_MAX; }
  bool payload_channel_for_all() const override { return false; }
  size_t send_payload(int peer, const uint8_t* data, size_t total, size_t done, size_t ready) override;
  size_t payload_split_min() const override { return split_ ? cma_min_ : SIZE_MAX; }
  bool payload_sent(int peer) override;
  Span recv_payload(int peer, uint8_t* dst, size_t total, size_t done, bool split) override;
  void consume_payload(int peer, size_t n) override;
  void drop_payloads() override;

 private:
  struct Segment;  // one mapped segment (ours or a peer's)
  size_t room(int peer);
  size_t available(int peer);
  void ring_bell(int peer);
  void check_abort();
  void check_alive(int peer);
  void post_abort(int rank, ErrorKind kind, const std::string& reason);
  bool probe_reads(int peer);
  void read_payload(int peer, uint64_t src, uint8_t* dst, size_t n);
  void serve_push(int peer);
  bool push_done(int peer) const;
  Span pushed_part(int peer, uint8_t* dst);

  ShmOptions opts_;
  WaitPolicy wait_{};
  std::vector<std::unique_ptr<Segment>> segs_;  // indexed by rank
  // Counters this rank alone writes, cached to avoid reading shared lines.
  std::vector<uint64_t> send_head_, send_pad_, recv_tail_, recv_pad_;
  // The payload channel: on for every link or none; bytes posted to each
  // peer and acknowledged from each (cumulative); the probe's target.
  bool cma_ = false;
  bool split_ = false;  // every rank may write a part of its payloads (a CPU each)
  size_t cma_min_ = 0;  // the largest of the ranks' thresholds: all decide alike
  std::vector<uint64_t> payload_posted_, payload_acked_;
  // The split: the range of the payload we last posted to each peer (what
  // its asks may name), and the part we asked each peer to write.
  std::vector<std::pair<uint64_t, uint64_t>> posted_;
  struct Asked {
    uint64_t src = 0;
    size_t len = 0;  // 0: nothing asked
  };
  std::vector<Asked> asked_;
  uint64_t push_id_ = 0;
  uint64_t probe_token_ = 0;
};

}  // namespace pycomm
