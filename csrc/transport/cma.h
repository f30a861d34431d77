// Cross-memory attach: one process of this host reading or writing another's
// memory directly (process_vm_readv/writev), the single copy Open MPI's
// shared-memory path makes for large messages. Used by the point-to-point
// engine's rendezvous (where sender and receiver each copy a part) and the
// shm transport's payload channel. (Tried as a payload channel for the shm transport's
// collectives too: slower than the two pipelined copies through the ring on
// both cores, bench/RESULTS.md.)
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>

namespace pycomm {
namespace cma {

// Lets any process of ours read this one where Yama restricts ptrace to
// ancestors (a no-op elsewhere; the readers are the job's own processes).
void allow_readers();

// Reads n bytes at `remote` in process `pid` into dst. False when the kernel
// refuses before any byte moved (no permission, no such syscall); throws
// kPeerLost when the process is gone and kComm when a read fails midway.
// `peer` names the rank in errors.
bool read(pid_t pid, uint64_t remote, void* dst, size_t n, int peer);
// Writes n bytes from src to `remote` in process `pid`; as read.
bool write(pid_t pid, uint64_t remote, const void* src, size_t n, int peer);

}  // namespace cma
}  // namespace pycomm
