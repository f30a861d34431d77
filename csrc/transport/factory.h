// Builds a transport by name: "shm" (ranks on one host) or "tcp". The MPI
// transport is built by pycomm._mpi over the program's MPI communicator and
// handed over as a capsule (transport_capsule.h), so it is not made here.
#pragma once

#include <memory>
#include <string>

#include "../common/options.h"
#include "bootstrap.h"
#include "transport.h"

namespace pycomm {

// Options read (all optional): shm: ring_bytes, spin_us, local_ranks; tcp:
// bind_addr, token, sock_buf_bytes, connect_timeout, spin_us, local_ranks.
// Blocks until every peer is connected (collective over `allgather`).
std::unique_ptr<Transport> make_transport(const std::string& kind, int rank, int size,
                                          const BootstrapAllgather& allgather, const Options& opts);

}  // namespace pycomm
