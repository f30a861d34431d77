// A handle on one submitted collective: wait with a deadline, poll, or read
// its error. Completed by the thread that ran the op.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>

#include "../common/error.h"

namespace pycomm {

class Work {
 public:
  void finish() { settle(false, ErrorKind::kComm, std::string()); }
  void fail(ErrorKind kind, const std::string& msg) { settle(true, kind, msg); }

  // Waits up to timeout_s (< 0: until done). Returns whether the op is done.
  bool wait(double timeout_s) {
    std::unique_lock<std::mutex> lk(mu_);
    if (timeout_s < 0) {
      cv_.wait(lk, [&] { return done_; });
      return true;
    }
    return cv_.wait_for(lk, std::chrono::duration<double>(timeout_s), [&] { return done_; });
  }
  bool is_completed() {
    std::lock_guard<std::mutex> lk(mu_);
    return done_;
  }
  // Valid once completed.
  bool failed() const { return failed_; }
  ErrorKind error_kind() const { return kind_; }
  const std::string& error_message() const { return msg_; }
  [[noreturn]] void rethrow() const { throw CommError(kind_, msg_); }

 private:
  void settle(bool failed, ErrorKind kind, const std::string& msg) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      failed_ = failed;
      kind_ = kind;
      msg_ = msg;
      done_ = true;
    }
    cv_.notify_all();
  }

  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false, failed_ = false;
  ErrorKind kind_ = ErrorKind::kComm;
  std::string msg_;
};

}  // namespace pycomm
