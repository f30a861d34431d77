#include "flight_recorder.h"

#include <time.h>

namespace pycomm {

const char* flight_state_name(FlightEntry::State s) {
  switch (s) {
    case FlightEntry::State::kQueued: return "scheduled";
    case FlightEntry::State::kStarted: return "started";
    case FlightEntry::State::kCompleted: return "completed";
    case FlightEntry::State::kFailed: return "failed";
  }
  return "?";
}

int64_t FlightRecorder::now_ns() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

FlightEntry* FlightRecorder::slot(uint64_t seq) {
  FlightEntry& e = ring_[seq % ring_.size()];
  return e.stamp.seq == seq && seq < next_ ? &e : nullptr;
}

FlightEntry& FlightRecorder::claim(uint64_t seq, int64_t t, bool started) {
  FlightEntry& e = ring_[seq % ring_.size()];
  e.queued_ns = t;
  e.started_ns = started ? t : 0;
  e.ended_ns = 0;
  e.state = started ? FlightEntry::State::kStarted : FlightEntry::State::kQueued;
  e.error.clear();
  if (seq >= next_) next_ = seq + 1;
  return e;
}

void FlightRecorder::queued(const OpStamp& stamp, bool started) {
  if (ring_.empty()) return;
  const int64_t t = now_ns();
  std::lock_guard<std::mutex> lk(mu_);
  FlightEntry& e = claim(stamp.seq, t, started);
  e.kind = FlightEntry::Kind::kCollective;
  e.stamp = stamp;
}

void FlightRecorder::posted(uint64_t seq, bool send, int peer, int tag, DType dtype, uint64_t count) {
  if (ring_.empty()) return;
  const int64_t t = now_ns();
  std::lock_guard<std::mutex> lk(mu_);
  FlightEntry& e = claim(seq, t, true);
  e.kind = send ? FlightEntry::Kind::kSend : FlightEntry::Kind::kRecv;
  e.stamp = OpStamp{};
  e.stamp.seq = seq;
  e.stamp.dtype = dtype;
  e.stamp.count = count;
  e.peer = peer;
  e.tag = tag;
}

void FlightRecorder::started(uint64_t seq) {
  if (ring_.empty()) return;
  const int64_t t = now_ns();
  std::lock_guard<std::mutex> lk(mu_);
  if (FlightEntry* e = slot(seq)) {
    e->started_ns = t;
    e->state = FlightEntry::State::kStarted;
  }
}

void FlightRecorder::ended(uint64_t seq, bool ok, const std::string& error) {
  if (ring_.empty()) return;
  const int64_t t = now_ns();
  std::lock_guard<std::mutex> lk(mu_);
  if (FlightEntry* e = slot(seq)) {
    e->ended_ns = t;
    e->state = ok ? FlightEntry::State::kCompleted : FlightEntry::State::kFailed;
    if (!ok) e->error = error;
  }
}

std::vector<FlightEntry> FlightRecorder::snapshot() const {
  std::lock_guard<std::mutex> lk(mu_);
  std::vector<FlightEntry> out;
  const uint64_t n = ring_.size();
  for (uint64_t seq = next_ > n ? next_ - n : 0; seq < next_; ++seq) {
    const FlightEntry& e = ring_[seq % n];
    if (e.stamp.seq == seq && e.queued_ns != 0) out.push_back(e);
  }
  return out;
}

}  // namespace pycomm
