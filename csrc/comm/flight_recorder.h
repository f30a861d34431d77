// The flight recorder: a communicator's last N collectives (what, and when
// each was queued, started and ended), so that after a hang or a failure the
// ranks' records show which rank did not reach which op (pycomm/flight.py
// reads them). A ring indexed by the op's sequence number; one short lock
// per event, cheap enough to stay on (PYCOMM_FLIGHT_RECORDER=N, 0: off).
// The point-to-point engine keeps a ring of its own, numbered apart: sends
// and receives are not ordered with the collectives.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "../collectives/exchange.h"

namespace pycomm {

struct FlightEntry {
  enum class State : uint8_t { kQueued, kStarted, kCompleted, kFailed };
  enum class Kind : uint8_t { kCollective, kSend, kRecv };
  Kind kind = Kind::kCollective;
  OpStamp stamp;          // seq, operation, dtype, op, root, count, ...; p2p: seq, dtype, count
  int32_t peer = -1;      // p2p: the destination, or the source (-1: any)
  int32_t tag = 0;        // p2p
  int64_t queued_ns = 0;  // wall clock (comparable across hosts as their clocks are)
  int64_t started_ns = 0;
  int64_t ended_ns = 0;
  State state = State::kQueued;
  std::string error;  // kFailed: the message
};

const char* flight_state_name(FlightEntry::State s);

class FlightRecorder {
 public:
  explicit FlightRecorder(size_t capacity) : ring_(capacity) {}
  bool on() const { return !ring_.empty(); }
  static int64_t now_ns();

  // started: the op also starts now (run on the caller's thread): one clock read.
  void queued(const OpStamp& stamp, bool started = false);
  // A send or receive, started as it is posted.
  void posted(uint64_t seq, bool send, int peer, int tag, DType dtype, uint64_t count);
  void started(uint64_t seq);
  void ended(uint64_t seq, bool ok, const std::string& error);
  // The kept entries, oldest first.
  std::vector<FlightEntry> snapshot() const;

 private:
  FlightEntry* slot(uint64_t seq);  // null when the ring has moved past seq
  FlightEntry& claim(uint64_t seq, int64_t t, bool started);  // mu_ held

  mutable std::mutex mu_;
  std::vector<FlightEntry> ring_;
  uint64_t next_ = 0;  // one past the newest seq recorded
};

}  // namespace pycomm
