#include "cma.h"

#include <sys/prctl.h>
#include <sys/uio.h>

#include <cerrno>
#include <cstring>

#include "../common/error.h"

namespace pycomm {
namespace cma {

void allow_readers() { prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY, 0, 0, 0); }

bool read(pid_t pid, uint64_t remote, void* dst, size_t n, int peer) {
  size_t done = 0;
  while (done < n) {
    iovec local{static_cast<uint8_t*>(dst) + done, n - done};
    iovec far{reinterpret_cast<void*>(remote + done), n - done};
    const ssize_t got = process_vm_readv(pid, &local, 1, &far, 1, 0);
    if (got > 0) {
      done += static_cast<size_t>(got);
      continue;
    }
    if (got < 0 && errno == EINTR) continue;
    if (got < 0 && errno == ESRCH)
      throw_error(ErrorKind::kPeerLost, strprintf("rank %d (pid %d) exited while its memory was being read", peer,
                                                  static_cast<int>(pid)));
    if (done == 0 && got < 0 && (errno == EPERM || errno == ENOSYS || errno == EACCES)) return false;
    throw_error(ErrorKind::kComm, strprintf("reading rank %d's memory failed after %zu of %zu bytes: %s", peer, done,
                                            n, got < 0 ? std::strerror(errno) : "no progress"));
  }
  return true;
}

}  // namespace cma
}  // namespace pycomm
