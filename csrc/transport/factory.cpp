#include "factory.h"

#include "shm_transport.h"
#include "tcp_transport.h"

namespace pycomm {

std::unique_ptr<Transport> make_transport(const std::string& kind, int rank, int size,
                                          const BootstrapAllgather& allgather, const Options& opts) {
  if (kind == "shm") {
    ShmOptions so;
    so.ring_bytes = opts.get_size("ring_bytes", so.ring_bytes);
    so.spin_us = static_cast<int>(opts.get_int("spin_us", so.spin_us));
    so.local_ranks = static_cast<int>(opts.get_int("local_ranks", so.local_ranks));
    so.cma_bytes = opts.get_int("shm_cma_bytes", so.cma_bytes);
    so.split = static_cast<int>(opts.get_int("shm_split", so.split));
    return std::make_unique<ShmTransport>(rank, size, allgather, so);
  }
  if (kind == "tcp") {
    TcpOptions to;
    to.bind_addr = opts.get("bind_addr", to.bind_addr);
    to.token = opts.get("token", to.token);
    to.sock_buf_bytes = static_cast<int>(opts.get_int("sock_buf_bytes", to.sock_buf_bytes));
    to.connect_timeout = opts.get_double("connect_timeout", to.connect_timeout);
    to.spin_us = static_cast<int>(opts.get_int("spin_us", to.spin_us));
    to.local_ranks = static_cast<int>(opts.get_int("local_ranks", to.local_ranks));
    return std::make_unique<TcpTransport>(rank, size, allgather, to);
  }
  throw_error(ErrorKind::kValue, "unknown transport '" + kind + "' (expected shm, tcp or mpi)");
}

}  // namespace pycomm
