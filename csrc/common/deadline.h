// A point in time after which a wait gives up. Every blocking wait in pycomm
// takes one, so nothing hangs forever.
#pragma once

#include <chrono>
#include <cstdint>
#include <ctime>

namespace pycomm {

class Deadline {
 public:
  using Clock = std::chrono::steady_clock;

  // seconds <= 0 or non-finite means "no deadline" only when explicitly asked via never().
  static Deadline after(double seconds) {
    Deadline d;
    d.at_ = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                               std::chrono::duration<double>(seconds));
    d.seconds_ = seconds;
    return d;
  }
  static Deadline never() {
    Deadline d;
    d.at_ = Clock::time_point::max();
    d.seconds_ = -1;
    return d;
  }

  bool expired() const { return Clock::now() >= at_; }
  // Milliseconds left, clamped to [0, cap_ms].
  int remaining_ms(int cap_ms) const {
    if (at_ == Clock::time_point::max()) return cap_ms;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(at_ - Clock::now()).count();
    if (left < 0) return 0;
    return left > cap_ms ? cap_ms : static_cast<int>(left);
  }
  double seconds() const { return seconds_; }

 private:
  Clock::time_point at_{};
  double seconds_ = 0;
};

}  // namespace pycomm
