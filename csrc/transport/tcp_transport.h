// TCP transport for ranks on different hosts.
//
// Full mesh: every pair has a data connection (non-blocking, TCP_NODELAY,
// large buffers) and a control connection that carries aborts, so a failing
// rank can tell the others why even while data is mid-stream. The higher rank
// connects; the handshake carries the job's random token and a connection
// without it is dropped without disturbing the job. Listening sockets are
// closed once the mesh is up.
#pragma once

#include <mutex>
#include <string>
#include <vector>

#include "bootstrap.h"
#include "transport.h"

namespace pycomm {

struct TcpOptions {
  std::string bind_addr = "127.0.0.1";  // listen here and advertise it to peers
  std::string token;                    // the job's secret, from the bootstrap store
  int sock_buf_bytes = 4 << 20;
  size_t staging_bytes = 4 << 20;  // per peer, where reductions read received bytes
  double connect_timeout = 60;
  int spin_us = -1;     // see spin_budget_us()
  int local_ranks = 0;  // ranks sharing this host's CPUs (0: all)
};

class TcpTransport final : public Transport {
 public:
  TcpTransport(int rank, int size, const BootstrapAllgather& allgather, const TcpOptions& opts);
  ~TcpTransport() override;

  const char* name() const override { return "tcp"; }
  size_t try_send(int peer, const void* data, size_t n, size_t granule) override;
  Span peek(int peer) override;
  void consume(int peer, size_t n) override;
  size_t try_recv_into(int peer, void* dst, size_t n, size_t granule) override;
  void wait(const WaitItem* items, size_t n, const Deadline& deadline) override;
  void abort_peers(ErrorKind kind, const std::string& reason) override;
  void abort_self(ErrorKind kind, const std::string& reason) override;
  void poll_abort() override;
  bool peer_alive(int peer) override;

 private:
  struct Staging {
    std::vector<uint8_t> buf;
    size_t pos = 0, fill = 0;
    bool eof = false;  // the peer closed; what is buffered is all there is
  };
  [[noreturn]] void lost(int peer, const char* what, int err);
  void read_control(int peer);
  void read_pending_aborts(int wait_ms);  // throws the first abort a peer sent
  void connect_mesh(const std::vector<std::string>& endpoints, int listen_fd);

  TcpOptions opts_;
  std::vector<int> data_fd_, ctl_fd_;
  std::vector<Staging> staging_;
  int spin_us_ = 0;
  int wake_fd_ = -1;  // eventfd: abort_self() interrupts a poll in another thread
  std::mutex self_abort_mu_;
  ErrorKind self_abort_kind_ = ErrorKind::kAborted;
  std::string self_abort_reason_;
};

}  // namespace pycomm
