#include "transport.h"

#include <unistd.h>

namespace pycomm {

// The host's CPUs, not this process's affinity: ranks pinned one per core
// (mpirun --bind-to core) are not oversubscribed.
bool oversubscribed(int local_ranks) {
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  return local_ranks > (cpus > 0 ? cpus : 1);
}

int spin_budget_us(int requested, int local_ranks) {
  if (requested >= 0) return requested;
  return oversubscribed(local_ranks) ? 0 : 50;
}

WaitPolicy wait_policy(int requested, int local_ranks) {
  WaitPolicy w;
  if (oversubscribed(local_ranks)) w = {100, 1};
  if (requested >= 0) w.spin_us = requested;
  return w;
}

std::string describe_wait(int rank, const WaitItem* items, size_t n, const Deadline& deadline) {
  std::string what;
  for (size_t i = 0; i < n; ++i) {
    if (!what.empty()) what += " or ";
    const char* fmt = !items[i].send                         ? "data from rank %d"
                      : items[i].payload && !items[i].bytes ? "rank %d to take our data"  // a payload's last sends
                                                            : "room toward rank %d";
    what += strprintf(fmt, items[i].peer);
  }
  return strprintf("rank %d: timeout after %.3g s waiting for %s", rank, deadline.seconds(),
                   what.c_str());
}

}  // namespace pycomm
