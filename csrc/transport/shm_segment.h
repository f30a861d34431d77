// The shared-memory transport's segment layout, shared by its rings
// (shm_transport.cpp) and its payload channel (shm_payload.cpp). Every rank
// maps every segment; only a segment's owner creates and unlinks it.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

#include "shm_transport.h"

namespace pycomm {
namespace shm {

constexpr uint64_t kMagic = 0x314d48534d4f4350ULL;  // "PCOMSHM1"
constexpr size_t kAlign = 64;
constexpr size_t kReasonBytes = 512;
constexpr uint32_t kAbortWriting = 0xffffffffu;

struct alignas(64) Header {
  uint64_t magic;
  uint32_t nranks;
  uint32_t rank;
  uint64_t ring_bytes;
  // The payload channel's probe: a peer reads `probe_token` at `probe_addr`
  // in process `pid`, then says in `reads_all` whether it could from everyone.
  // `cma_bytes`: the owner's threshold (every rank uses the largest).
  int32_t pid;
  uint64_t probe_addr;
  uint64_t probe_token;
  uint64_t cma_bytes;
  std::atomic<uint32_t> reads_all;
  uint32_t can_help;  // the owner has a CPU of its own: it may write a part of its payloads (split)
  alignas(64) std::atomic<uint32_t> bell;  // bumped whenever a waiter here may proceed
  std::atomic<uint32_t> sleeping;          // owner is (about to be) in futex_wait
  alignas(64) std::atomic<uint32_t> abort_kind;  // 0: none; else ErrorKind + 1
  char abort_reason[kReasonBytes];
};

// Link p -> r lives in r's segment: p advances head, r advances tail and
// `acked` (payload-channel bytes r has copied out of p's memory). The split
// (see ShmTransport::recv_payload): r asks p to write push_len bytes from
// push_src (in p) to push_dst (in r) by setting `push` to (id, kPushAsked);
// p claims it (kPushWriting), writes, stores `pushed` (bytes written: all or
// none) and sets kPushDone. r may withdraw an ask p has not claimed.
struct RingCtl {
  alignas(64) std::atomic<uint64_t> head;
  alignas(64) std::atomic<uint64_t> tail;
  std::atomic<uint64_t> acked;
  alignas(64) std::atomic<uint64_t> push;
  uint64_t push_src, push_dst, push_len;
  std::atomic<uint64_t> pushed;
};

enum PushPhase : uint64_t { kPushIdle = 0, kPushAsked = 1, kPushWriting = 2, kPushDone = 3 };
inline uint64_t push_word(uint64_t id, PushPhase phase) { return id << 2 | phase; }
inline PushPhase push_phase(uint64_t word) { return static_cast<PushPhase>(word & 3); }

// A payload-channel message in the ring: where the sender's bytes are.
struct PayloadDesc {
  uint64_t addr;
  uint64_t len;
};

inline size_t align_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

}  // namespace shm

struct ShmTransport::Segment {
  std::string name;
  int fd = -1;
  void* base = nullptr;
  size_t bytes = 0;
  bool owner = false;
  bool unlinked = false;

  shm::Header* header() const { return static_cast<shm::Header*>(base); }
  shm::RingCtl* ctl(int peer) const {
    return reinterpret_cast<shm::RingCtl*>(static_cast<char*>(base) + sizeof(shm::Header)) + peer;
  }
  uint8_t* ring(int peer) const {
    shm::Header* h = header();
    size_t ctl_bytes = shm::align_up(sizeof(shm::RingCtl) * h->nranks, shm::kAlign);
    return static_cast<uint8_t*>(base) + sizeof(shm::Header) + ctl_bytes + peer * h->ring_bytes;
  }
  static size_t size_for(int nranks, size_t ring_bytes) {
    return sizeof(shm::Header) + shm::align_up(sizeof(shm::RingCtl) * nranks, shm::kAlign) + nranks * ring_bytes;
  }
  ~Segment() {
    if (base) munmap(base, bytes);
    if (fd >= 0) close(fd);  // drops our flock: peers see us gone
    if (owner && !unlinked) shm_unlink(name.c_str());
  }
};

}  // namespace pycomm
