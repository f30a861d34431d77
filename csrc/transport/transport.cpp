#include "transport.h"

namespace pycomm {

std::string describe_wait(int rank, const WaitItem* items, size_t n, const Deadline& deadline) {
  std::string what;
  for (size_t i = 0; i < n; ++i) {
    if (!what.empty()) what += " or ";
    what += strprintf(items[i].send ? "room toward rank %d" : "data from rank %d", items[i].peer);
  }
  return strprintf("rank %d: timed out after %.3g s waiting for %s", rank, deadline.seconds(),
                   what.c_str());
}

}  // namespace pycomm
