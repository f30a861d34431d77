// The progress engine every algorithm is written with: one call moves a set
// of messages to and from several peers at once, without blocking on any one
// of them, and sleeps in the transport only when nothing can move.
//
// Each message starts with a 64-byte frame stamped with the op (sequence,
// collective, dtype, redop, root, count); the receiver checks it against its
// own call, so ranks that called different collectives get a MismatchError
// naming both calls instead of a hang or corrupted numbers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "../common/deadline.h"
#include "../common/dtype.h"
#include "../common/options.h"
#include "../transport/transport.h"
#include "operation.h"

namespace pycomm {

// What every rank must agree on for one collective call.
struct OpStamp {
  uint64_t seq = 0;
  Coll coll = Coll::kBarrier;
  DType dtype = DType::kUInt8;
  RedOp op = RedOp::kSum;
  int32_t root = 0;
  uint64_t count = 0;
  uint32_t block_size = 0;  // int8 collectives: the quantization block
  bool device = false;      // GPU buffers (device.h): their own protocol
};
// "allreduce #7 (float32 x 1024, sum)"
std::string describe(const OpStamp& s);

// Where a received payload goes: copied to dst, or, with `own`, reduced:
// dst[i] = own[i] op received[i].
struct Sink {
  uint8_t* dst = nullptr;
  const uint8_t* own = nullptr;
};

struct SendSpec {
  int peer;
  const uint8_t* data;
  size_t bytes;
  const size_t* ready = nullptr;  // when set, only the first *ready bytes may go yet (forwarding)
  bool direct = false;  // may take a single-copy payload channel (Transport::payload_channel_for_all)
  // progress, owned by the engine
  size_t frame_sent = 0;
  bool ended = false;
  size_t done = 0;
};

struct RecvSpec {
  int peer;
  size_t bytes;
  Sink sink;
  bool direct = false;  // as the matching send's (the receive of such a payload must copy, not reduce)
  bool split = false;   // the sender of a direct payload may copy a part (Transport::recv_payload)
  bool framed = false, ended = false;
  size_t done = 0;
};

struct Tuning {
  size_t slice_bytes = 256 << 10;       // most bytes handed to the transport per call
  size_t direct_max_bytes = 32 << 10;   // at or below: one-step direct algorithms
  size_t int8_piece_bytes = 256 << 10;  // int8 collectives: float32 bytes per owner per round
  bool single_host = false;             // every rank on this host (GPU buffers: CUDA IPC)

  // From options slice_bytes, direct_max_bytes, int8_piece_bytes and
  // local_ranks (single_host when it is `size`).
  static Tuning from(const Options& o, int size) {
    Tuning t;
    t.slice_bytes = o.get_size("slice_bytes", t.slice_bytes);
    t.direct_max_bytes = o.get_size("direct_max_bytes", t.direct_max_bytes);
    t.int8_piece_bytes = o.get_size("int8_piece_bytes", t.int8_piece_bytes);
    t.single_host = o.get_int("local_ranks", 1) == size;
    return t;
  }
};

// Scratch memory an algorithm may use; owned by the communicator, reused across ops.
class Scratch {
 public:
  uint8_t* get(size_t bytes) {
    if (buf_.size() < bytes) buf_.resize(bytes);
    return buf_.data();
  }

 private:
  std::vector<uint8_t> buf_;
};

// The newest op each peer was heard in (a frame received from it), so that
// a timeout can say who has not reached this op. heard[p] = seq + 1; 0: never.
struct PeerProgress {
  std::vector<uint64_t> heard;
  // "rank 2 (last heard in #5), rank 3 (never heard)" for the peers not heard
  // in op `seq` or later; empty when all were.
  std::string behind(uint64_t seq, int self) const;
};

class OpContext {
 public:
  OpContext(Transport& tr, const OpStamp& stamp, const Deadline& deadline, const Tuning& tuning,
            Scratch& scratch, PeerProgress* progress = nullptr)
      : tr(tr), stamp(stamp), deadline(deadline), tuning(tuning), scratch(scratch),
        progress(progress) {}

  int rank() const { return tr.rank(); }
  int size() const { return tr.size(); }
  size_t elem() const { return dtype_size(stamp.dtype); }
  // The unit messages move in: an element, or a byte for int8 payloads.
  size_t granule() const { return op_info(stamp.coll).int8 ? 1 : elem(); }
  int peer(int offset) const { return ((rank() + offset) % size() + size()) % size(); }

  // Runs all the sends and receives to completion, concurrently.
  void exchange(SendSpec* sends, size_t nsends, RecvSpec* recvs, size_t nrecvs);
  // A stamped meeting: a zero-byte message to and from every peer.
  void sync_peers();
  // The common case: one message to `to` while one arrives from `from`.
  void sendrecv(int to, const void* src, size_t send_bytes, int from, size_t recv_bytes, Sink sink);

  Transport& tr;
  const OpStamp stamp;
  const Deadline deadline;
  const Tuning& tuning;
  Scratch& scratch;
  PeerProgress* progress;

 private:
  void run_exchange(SendSpec* sends, size_t nsends, RecvSpec* recvs, size_t nrecvs);
  // Whether a message takes the transport's payload channel.
  bool use_channel(size_t bytes, bool direct) const;
  bool progress_send(SendSpec& s, std::vector<WaitItem>& waits);
  bool progress_recv(RecvSpec& r, std::vector<WaitItem>& waits);
  void check_frame(const uint8_t* frame, const RecvSpec& r);

  std::vector<uint8_t> frame_buf_;  // a frame and its inline payload
};

}  // namespace pycomm
