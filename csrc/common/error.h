// The error vocabulary of the native core. Each kind maps to one Python class
// in pycomm.errors (the bindings translate), so a failure names its cause.
#pragma once

#include <cstdarg>
#include <cstdio>
#include <stdexcept>
#include <string>

namespace pycomm {

enum class ErrorKind : int {
  kComm = 0,      // generic communication failure
  kTimeout = 1,   // a wait passed its deadline
  kMismatch = 2,  // ranks called different collectives at the same sequence number
  kPeerLost = 3,  // a peer died or its connection broke
  kAborted = 4,   // abort() here or a peer's failure
  kValue = 5,     // bad argument (ValueError)
  kType = 6,      // bad argument type (TypeError)
};

class CommError : public std::runtime_error {
 public:
  CommError(ErrorKind kind, const std::string& msg, bool from_peer = false)
      : std::runtime_error(msg), kind_(kind), from_peer_(from_peer) {}
  ErrorKind kind() const { return kind_; }
  // Raised here because a peer aborted: the message already names its origin.
  bool from_peer() const { return from_peer_; }

 private:
  ErrorKind kind_;
  bool from_peer_;
};

// printf-style formatting for error messages (std::format is C++20).
__attribute__((format(printf, 1, 2))) inline std::string strprintf(const char* fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  return buf;
}

[[noreturn]] inline void throw_error(ErrorKind kind, const std::string& msg) {
  throw CommError(kind, msg);
}

}  // namespace pycomm
