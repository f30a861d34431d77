// Point-to-point: sends and receives matched by (source, tag), any number
// outstanding at once, over a transport of their own (so they never queue
// behind a communicator's collectives, nor hold them up).
//
// Matching is MPI's: a receive takes the first message from its source (any
// source when -1) with its tag, in arrival order; messages between one pair
// with one tag are never overtaken. Small messages (up to eager_bytes) travel
// with their header and wait at the receiver, copied, until a receive takes
// them. Larger ones are rendezvous: the header goes first (RTS), the receiver
// answers when a receive matches (CTS, or NACK when the receive's size is
// wrong), and only then does the payload move, straight into the receive's
// buffer. So nothing big is ever buffered, and no unmatched payload blocks a
// link. Between processes of one host (shared memory) the payload is instead
// copied once, from the sender's buffer into the receive's (process_vm_readv
// and _writev, as Open MPI's single-copy path): the receiver reads it, a
// slice at a time, and answers FIN when done. A sender that waits for its
// send (a blocking send, Work.wait without a timeout) has nothing else to do,
// so where it has a CPU of its own it offers to copy too (HELP); a receiver
// still reading answers PUSH, and the sender writes the second half of what
// is left straight into the receive's buffer and answers PUSHED. Two CPUs
// copy at once, faster than one here, and each side, knowing the other is
// copying, polls instead of sleeping. Only a waiting sender offers: one that
// posted and went on (isend, then a collective) could not answer a PUSH.
// Where the kernel refuses the read, the receiver answers CTS and the
// payload comes through the link. Where the transport has a payload channel
// (MPI), DATA payloads of payload_min() bytes or more take it: sent from the
// sender's buffer, received straight into the receive's.
//
// A message carries its number among the pair's messages with its tag (seq),
// checked on arrival. A receive that refuses a message (wrong size) fails
// its send too: a rendezvous send at once; an eager send, already complete,
// through this rank's next op with that peer not yet matched.
//
// Progress is made by whichever thread waits (a blocking call, Work.wait) or
// posts: every outstanding op moves whenever any of them is waited for, so
// both ranks may post receives first and sends second, at any size.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "../comm/flight_recorder.h"
#include "../comm/work.h"
#include "../common/deadline.h"
#include "../transport/transport.h"

namespace pycomm {

constexpr int kAnySource = -1;

// One send or receive, and its outcome (valid once work is completed).
struct P2POp {
  bool send = false;
  int peer = 0;  // destination, or source (kAnySource: any)
  int tag = 0;
  uint8_t* buf = nullptr;  // a send's data is only read
  size_t bytes = 0;        // send: the message; receive: the buffer
  DType dtype = DType::kUInt8;  // what the bytes are, for the flight recorder
  bool allow_shorter = false;
  Deadline deadline = Deadline::never();
  std::shared_ptr<Work> work = std::make_shared<Work>();
  // Outcome of a receive.
  int source = -1;
  size_t received = 0;
  // Engine state.
  uint64_t seq = 0;    // its number among this engine's ops (the flight recorder's)
  uint64_t msg = 0;    // the message's number on its link
  size_t done = 0;     // payload bytes moved
  int stage = 0;       // see p2p_engine.cpp
  // A single-copy receive: the payload in the sender's memory (far, in
  // process far_pid); we copy [done, until), the sender [until, bytes) once
  // it has (pushed). A send: whether it offered to copy (HELP).
  uint64_t far = 0;
  int far_pid = 0;
  size_t until = 0;
  bool pushed = false;
  bool helping = false;
};

class P2PEngine {
 public:
  // same_host: every peer is a process of this host (single-copy reads).
  // flight_entries: the size of its flight recorder (0: off).
  P2PEngine(std::unique_ptr<Transport> transport, size_t eager_bytes, bool same_host = false,
            size_t flight_entries = 0);
  ~P2PEngine();
  P2PEngine(const P2PEngine&) = delete;
  P2PEngine& operator=(const P2PEngine&) = delete;

  // Starts ops (their works complete later; errors land in them). Posting
  // several at once is NCCL's group: none of them waits for another.
  void post(const std::vector<std::shared_ptr<P2POp>>& ops);
  // Drives every outstanding op until `op` completes or `timeout_s` (< 0:
  // until its own deadline) passes; returns whether it completed.
  bool wait(P2POp& op, double timeout_s);
  // Fails every outstanding op here and tells every peer's engine to do the
  // same; later posts fail at once.
  void abort(ErrorKind kind, const std::string& why);
  // Fails every outstanding op here (the communicator is closing).
  void close() { fail_all(ErrorKind::kAborted, "the communicator was closed"); }
  // The flight recorder's sends and receives, oldest first.
  std::vector<FlightEntry> flight_record() const { return flight_.snapshot(); }

 private:
  struct Out;       // a message being written to a peer
  struct Incoming;  // the message being read from a peer
  struct Unexpected;

  void progress_locked();
  bool progress_sends(int peer);
  bool progress_recv(int peer);
  void on_header(int peer, const uint8_t* header);
  void match_posted(const std::shared_ptr<P2POp>& op);
  struct Offer;  // what a message's header offers a receive (protocol.h)
  void accept(int peer, const std::shared_ptr<P2POp>& op, const Offer& m);
  void reply(int peer, int kind, const Offer& m, size_t recv_bytes, uint64_t addr = 0);
  // One host's single copy (single_copy.cpp).
  bool copy_in(int peer, const std::shared_ptr<P2POp>& op, const Offer& m);
  bool copy_some();
  void copied(int peer, P2POp& op);
  void read_part(int peer, P2POp& op, size_t from, size_t to);
  void offer_help(P2POp& op);
  void on_help(int peer, P2POp& op);
  void on_push(int peer, P2POp* op, const uint8_t* header);
  void on_pushed(int peer, P2POp& op, size_t wrote);
  void expect_peer(size_t bytes);
  void complete(P2POp& op, bool ok, ErrorKind kind = ErrorKind::kComm, const std::string& why = {});
  void finish(P2POp& op);
  void fail(P2POp& op, ErrorKind kind, const std::string& why);
  void fail_peer(int peer, ErrorKind kind, const std::string& why);
  void expire();
  void fail_all(ErrorKind kind, const std::string& why);
  std::string what(const P2POp& op) const;

  std::unique_ptr<Transport> tr_;
  const int rank_, size_;
  const size_t eager_bytes_;

  // The engine's lock, taken through enter(): a thread driving the engine
  // (waiting in the transport, a slice at a time) lets every thread that
  // wants in have it between slices, which a plain mutex does not promise.
  std::unique_lock<std::mutex> enter();
  std::atomic<int> wanting_{0};
  std::mutex mu_;  // everything below; held by the thread moving bytes
  std::vector<std::deque<std::unique_ptr<Out>>> out_;  // per peer, in order
  std::vector<std::unique_ptr<Incoming>> in_;        // per peer
  std::vector<uint64_t> next_msg_;                    // per peer: the next message number we send
  std::vector<std::unordered_map<int, uint64_t>> send_seq_, recv_seq_;  // per peer, per tag: the next message's seq
  std::list<std::shared_ptr<P2POp>> posted_;          // receives not matched yet, in post order
  std::list<Unexpected> unexpected_;                  // arrived, not matched yet, in arrival order
  std::list<std::shared_ptr<P2POp>> active_;          // matched or sending: waiting for bytes
  std::vector<std::string> dead_;                     // per peer: why it is gone ("" alive)
  std::vector<std::string> refused_;                  // per peer: a completed send it refused, not yet reported
  std::vector<bool> single_copy_;                     // per peer: its memory can be read directly
  const bool own_cpus_;                               // same host, no more ranks than CPUs: sends help copy
  std::chrono::steady_clock::time_point peer_busy_until_{};  // a peer copies for us until about then: poll
  uint64_t next_seq_ = 0;
  FlightRecorder flight_;
  bool broken_ = false;
  ErrorKind broken_kind_ = ErrorKind::kComm;
  std::string broken_why_;
};

}  // namespace pycomm
