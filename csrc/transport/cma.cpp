#include "cma.h"

#include <sys/prctl.h>
#include <sys/uio.h>

#include <cerrno>
#include <cstring>

#include "../common/error.h"

namespace pycomm {
namespace cma {

void allow_readers() { prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY, 0, 0, 0); }

namespace {

bool copy(bool write, pid_t pid, uint64_t remote, uint8_t* local_bytes, size_t n, int peer) {
  size_t done = 0;
  while (done < n) {
    iovec local{local_bytes + done, n - done};
    iovec far{reinterpret_cast<void*>(remote + done), n - done};
    const ssize_t got =
        write ? process_vm_writev(pid, &local, 1, &far, 1, 0) : process_vm_readv(pid, &local, 1, &far, 1, 0);
    if (got > 0) {
      done += static_cast<size_t>(got);
      continue;
    }
    if (got < 0 && errno == EINTR) continue;
    if (got < 0 && errno == ESRCH)
      throw_error(ErrorKind::kPeerLost, strprintf("rank %d (pid %d) exited while its memory was being %s", peer,
                                                  static_cast<int>(pid), write ? "written" : "read"));
    if (done == 0 && got < 0 && (errno == EPERM || errno == ENOSYS || errno == EACCES)) return false;
    throw_error(ErrorKind::kComm, strprintf("%s rank %d's memory failed after %zu of %zu bytes: %s",
                                            write ? "writing" : "reading", peer, done, n,
                                            got < 0 ? std::strerror(errno) : "no progress"));
  }
  return true;
}

}  // namespace

bool read(pid_t pid, uint64_t remote, void* dst, size_t n, int peer) {
  return copy(false, pid, remote, static_cast<uint8_t*>(dst), n, peer);
}

bool write(pid_t pid, uint64_t remote, const void* src, size_t n, int peer) {
  // process_vm_writev only reads the local iovec.
  return copy(true, pid, remote, const_cast<uint8_t*>(static_cast<const uint8_t*>(src)), n, peer);
}

}  // namespace cma
}  // namespace pycomm
