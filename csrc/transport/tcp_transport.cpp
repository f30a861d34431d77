#include "tcp_transport.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>
#include <type_traits>

namespace pycomm {
namespace {

constexpr uint32_t kHelloMagic = 0x50434f4d;  // "PCOM"
constexpr uint32_t kProtocol = 1;
constexpr size_t kTokenBytes = 32;
enum LinkKind : uint32_t { kData = 0, kControl = 1 };

struct Hello {
  uint32_t magic;
  uint32_t protocol;
  uint32_t rank;
  uint32_t nranks;
  uint32_t kind;
  uint32_t reserved;
  uint8_t token[kTokenBytes];
};

struct AbortFrame {
  uint32_t kind;
  uint32_t len;
};

Hello make_hello(int rank, int size, LinkKind kind, const std::string& token) {
  Hello h{};
  h.magic = kHelloMagic;
  h.protocol = kProtocol;
  h.rank = rank;
  h.nranks = size;
  h.kind = kind;
  std::memcpy(h.token, token.data(), std::min(token.size(), kTokenBytes));
  return h;
}

bool same_token(const Hello& a, const Hello& b) {
  uint8_t diff = 0;  // constant time: no early exit that leaks how much matched
  for (size_t i = 0; i < kTokenBytes; ++i) diff |= a.token[i] ^ b.token[i];
  return diff == 0;
}

void set_buffers(int fd, int bytes) {
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof(bytes));
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof(bytes));
}

void set_io_timeout(int fd, double seconds) {
  timeval tv{static_cast<time_t>(seconds), static_cast<suseconds_t>((seconds - (time_t)seconds) * 1e6)};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

// Blocking exact read/write under the socket's SO_RCVTIMEO/SO_SNDTIMEO.
template <class Buf, class Io>
bool transfer_exact(Buf* p, size_t n, Io io) {
  auto* b = reinterpret_cast<std::conditional_t<std::is_const_v<Buf>, const uint8_t, uint8_t>*>(p);
  while (n) {
    ssize_t r = io(b, n);
    if (r <= 0) {
      if (r < 0 && errno == EINTR) continue;
      return false;
    }
    b += r;
    n -= r;
  }
  return true;
}

bool read_exact(int fd, void* p, size_t n) {
  return transfer_exact(p, n, [fd](uint8_t* b, size_t k) { return recv(fd, b, k, 0); });
}

bool write_exact(int fd, const void* p, size_t n) {
  return transfer_exact(p, n, [fd](const uint8_t* b, size_t k) { return send(fd, b, k, MSG_NOSIGNAL); });
}

addrinfo* resolve(const std::string& host, const std::string& port, bool passive) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = passive ? AI_PASSIVE : 0;
  addrinfo* res = nullptr;
  int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &res);
  if (rc != 0)
    throw_error(ErrorKind::kComm,
                strprintf("cannot resolve %s:%s: %s", host.c_str(), port.c_str(), gai_strerror(rc)));
  return res;
}

int listen_on(const std::string& host, int buf_bytes, std::string* endpoint) {
  addrinfo* res = resolve(host, "0", true);
  int fd = -1;
  for (addrinfo* ai = res; ai && fd < 0; ai = ai->ai_next) {
    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0);
    if (fd < 0) continue;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    set_buffers(fd, buf_bytes);  // before listen: accepted sockets inherit the window scale
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 128) != 0) {
      close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(res);
  if (fd < 0)
    throw_error(ErrorKind::kComm, strprintf("cannot listen on %s: %s", host.c_str(), strerror(errno)));
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  int port = ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                            : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  *endpoint = host + " " + std::to_string(port);
  return fd;
}

// Connects to "host port", retrying while the peer is not listening yet.
int connect_to(const std::string& endpoint, int buf_bytes, const Deadline& deadline) {
  size_t sp = endpoint.rfind(' ');
  std::string host = endpoint.substr(0, sp), port = endpoint.substr(sp + 1);
  int delay_ms = 1;
  for (;;) {
    addrinfo* res = resolve(host, port, false);
    int fd = socket(res->ai_family, res->ai_socktype | SOCK_CLOEXEC, 0);
    int err = 0;
    if (fd >= 0) {
      set_buffers(fd, buf_bytes);
      if (connect(fd, res->ai_addr, res->ai_addrlen) == 0) {
        freeaddrinfo(res);
        return fd;
      }
      err = errno;
      close(fd);
    }
    freeaddrinfo(res);
    if (deadline.expired())
      throw_error(ErrorKind::kTimeout,
                  strprintf("cannot connect to %s:%s: %s", host.c_str(), port.c_str(), strerror(err)));
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    delay_ms = std::min(delay_ms * 2, 100);
  }
}

void tune_data_socket(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

}  // namespace

TcpTransport::TcpTransport(int rank, int size, const BootstrapAllgather& allgather,
                           const TcpOptions& opts)
    : Transport(rank, size), opts_(opts), data_fd_(size, -1), ctl_fd_(size, -1), staging_(size) {
  if (opts_.token.size() < 16)
    throw_error(ErrorKind::kValue, "tcp transport needs a job token of at least 16 bytes");
  spin_us_ = spin_budget_us(opts_.spin_us, opts_.local_ranks > 0 ? opts_.local_ranks : size);
  wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0) throw_error(ErrorKind::kComm, strprintf("eventfd: %s", strerror(errno)));
  std::string endpoint;
  int listen_fd = listen_on(opts_.bind_addr, opts_.sock_buf_bytes, &endpoint);
  try {
    connect_mesh(allgather(endpoint), listen_fd);
  } catch (...) {
    close(listen_fd);
    for (int fd : data_fd_) if (fd >= 0) close(fd);
    for (int fd : ctl_fd_) if (fd >= 0) close(fd);
    close(wake_fd_);
    throw;
  }
  close(listen_fd);  // the mesh is complete: nobody else may connect
  for (int p = 0; p < size; ++p) {
    if (p == rank) continue;
    tune_data_socket(data_fd_[p]);
    set_io_timeout(ctl_fd_[p], 1.0);  // aborts are small; never block long on a dead peer
    staging_[p].buf.resize(opts_.staging_bytes);
  }
}

void TcpTransport::connect_mesh(const std::vector<std::string>& endpoints, int listen_fd) {
  Deadline deadline = Deadline::after(opts_.connect_timeout);
  // Connect to every lower rank: data first, then control.
  for (int p = 0; p < rank_; ++p) {
    for (LinkKind kind : {kData, kControl}) {
      int fd = connect_to(endpoints[p], opts_.sock_buf_bytes, deadline);
      set_io_timeout(fd, std::max(1.0, opts_.connect_timeout));
      Hello mine = make_hello(rank_, size_, kind, opts_.token), theirs{};
      if (!write_exact(fd, &mine, sizeof(mine)) || !read_exact(fd, &theirs, sizeof(theirs)) ||
          theirs.magic != kHelloMagic || theirs.rank != static_cast<uint32_t>(p) ||
          !same_token(mine, theirs)) {
        close(fd);
        throw_error(ErrorKind::kComm,
                    strprintf("rank %d: handshake with rank %d at %s failed (another job on that "
                              "port, or the peer rejected our token)", rank_, p, endpoints[p].c_str()));
      }
      (kind == kData ? data_fd_ : ctl_fd_)[p] = fd;
    }
  }
  // Accept every higher rank's two connections. Hellos are read as they
  // arrive, from all pending connections at once: a stranger that connects
  // and says nothing, or half a hello, delays nobody and is dropped after
  // kHelloSeconds; one that says something wrong is dropped at once.
  constexpr auto kHelloSeconds = std::chrono::seconds(2);
  struct Pending {
    int fd;
    size_t got;
    Hello hello;
    std::chrono::steady_clock::time_point since;
  };
  std::vector<Pending> pending;
  auto drop = [&](size_t i) {
    close(pending[i].fd);
    pending.erase(pending.begin() + i);
  };
  int expected = 2 * (size_ - 1 - rank_);
  try {
    while (expected > 0) {
      std::vector<pollfd> pfds{{listen_fd, POLLIN, 0}};
      for (const Pending& p : pending) pfds.push_back({p.fd, POLLIN, 0});
      int rc = poll(pfds.data(), pfds.size(), deadline.remaining_ms(200));
      if (rc < 0 && errno == EINTR) continue;
      if (deadline.expired()) {
        std::string missing;
        for (int p = rank_ + 1; p < size_; ++p)
          if (data_fd_[p] < 0 || ctl_fd_[p] < 0) missing += strprintf(" %d", p);
        throw_error(ErrorKind::kTimeout, strprintf("rank %d: ranks%s never connected within %.3g s",
                                                   rank_, missing.c_str(), opts_.connect_timeout));
      }
      const auto now = std::chrono::steady_clock::now();
      for (size_t i = pending.size(); i-- > 0;) {  // backwards: drop() shifts what follows
        Pending& p = pending[i];
        if (pfds[i + 1].revents) {
          ssize_t n = recv(p.fd, reinterpret_cast<uint8_t*>(&p.hello) + p.got, sizeof(Hello) - p.got,
                           MSG_DONTWAIT);
          if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            drop(i);
            continue;
          }
          if (n > 0) p.got += static_cast<size_t>(n);
        }
        if (p.got < sizeof(Hello)) {
          if (now - p.since > kHelloSeconds) drop(i);
          continue;
        }
        const Hello& theirs = p.hello;
        Hello mine = make_hello(rank_, size_, kData, opts_.token);
        bool ok = theirs.magic == kHelloMagic && theirs.protocol == kProtocol &&
                  same_token(mine, theirs) && theirs.nranks == static_cast<uint32_t>(size_) &&
                  theirs.rank > static_cast<uint32_t>(rank_) &&
                  theirs.rank < static_cast<uint32_t>(size_) && theirs.kind <= kControl;
        int* slot = ok ? &(theirs.kind == kData ? data_fd_ : ctl_fd_)[theirs.rank] : nullptr;
        mine.kind = theirs.kind;
        if (!ok || *slot >= 0 || !write_exact(p.fd, &mine, sizeof(mine))) {
          drop(i);
          continue;
        }
        *slot = p.fd;
        --expected;
        pending.erase(pending.begin() + i);  // the fd is the peer's now
      }
      if (pfds[0].revents & POLLIN) {
        int fd = accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd >= 0) {
          set_io_timeout(fd, 2.0);  // our hello back, to a peer that stopped reading
          pending.push_back({fd, 0, Hello{}, now});
        }
      }
    }
  } catch (...) {
    for (const Pending& p : pending) close(p.fd);
    throw;
  }
  for (const Pending& p : pending) close(p.fd);
}

TcpTransport::~TcpTransport() {
  close(wake_fd_);
  for (int fd : data_fd_) if (fd >= 0) close(fd);
  for (int fd : ctl_fd_) if (fd >= 0) close(fd);
}

void TcpTransport::poll_abort() { read_pending_aborts(0); }

bool TcpTransport::peer_alive(int peer) {
  // A process that exited has had its sockets closed by the kernel: its
  // control link reads end-of-file (or a reset). Pending bytes (an abort
  // message) mean it was alive to send them; peeking leaves them for read_control.
  if (peer == rank_) return true;
  const int fd = ctl_fd_[peer];
  if (fd < 0) return false;
  pollfd p{fd, POLLIN | POLLRDHUP, 0};
  if (poll(&p, 1, 0) <= 0) return true;
  if (p.revents & (POLLERR | POLLHUP | POLLRDHUP)) return false;
  char c;
  const ssize_t got = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
  return got > 0 || (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR));
}

void TcpTransport::lost(int peer, const char* what, int err) {
  // A peer that gave up sends its reason on the control link before it
  // closes: report that cause rather than the broken connection it led to.
  read_pending_aborts(50);
  throw_error(ErrorKind::kPeerLost,
              strprintf("rank %d: connection to rank %d %s%s%s", rank_, peer, what,
                        err ? ": " : "", err ? strerror(err) : ""));
}

void TcpTransport::read_pending_aborts(int wait_ms) {
  std::vector<pollfd> fds;
  std::vector<int> who;
  for (int p = 0; p < size_; ++p) {
    if (ctl_fd_[p] < 0) continue;
    fds.push_back({ctl_fd_[p], POLLIN, 0});
    who.push_back(p);
  }
  if (!fds.empty() && poll(fds.data(), fds.size(), wait_ms) > 0)
    for (size_t i = 0; i < fds.size(); ++i)
      if (fds[i].revents & POLLIN) read_control(who[i]);
}

size_t TcpTransport::try_send(int peer, const void* data, size_t n, size_t) {
  for (;;) {
    ssize_t r = send(data_fd_[peer], data, n, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (r >= 0) return static_cast<size_t>(r);
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    lost(peer, "broke while sending", errno);
  }
}

Span TcpTransport::peek(int peer) {
  Staging& s = staging_[peer];
  if (s.pos == s.fill) s.pos = s.fill = 0;
  if (s.buf.size() - s.fill < s.buf.size() / 4 && s.pos > 0) {  // make room at the end
    std::memmove(s.buf.data(), s.buf.data() + s.pos, s.fill - s.pos);
    s.fill -= s.pos;
    s.pos = 0;
  }
  if (s.fill < s.buf.size()) {
    ssize_t r = recv(data_fd_[peer], s.buf.data() + s.fill, s.buf.size() - s.fill, MSG_DONTWAIT);
    if (r > 0) {
      s.fill += r;
    } else if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
      // A peer that finished may close before we read all it sent: only an
      // empty staging buffer makes the end of the stream an error.
      s.eof = true;
      if (s.fill == s.pos) lost(peer, r == 0 ? "was closed by the peer" : "broke while receiving", r ? errno : 0);
    }
  }
  return {s.buf.data() + s.pos, s.fill - s.pos};
}

void TcpTransport::consume(int peer, size_t n) { staging_[peer].pos += n; }

size_t TcpTransport::try_recv_into(int peer, void* dst, size_t n, size_t granule) {
  Staging& s = staging_[peer];
  if (s.fill > s.pos) return Transport::try_recv_into(peer, dst, n, granule);
  if (granule > 1) return Transport::try_recv_into(peer, dst, n, granule);
  for (;;) {  // straight off the socket into the destination: no staging copy
    ssize_t r = recv(data_fd_[peer], dst, n, MSG_DONTWAIT);
    if (r > 0) return static_cast<size_t>(r);
    if (r == 0) lost(peer, "was closed by the peer", 0);
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    lost(peer, "broke while receiving", errno);
  }
}

void TcpTransport::read_control(int peer) {
  AbortFrame f{};
  if (!read_exact(ctl_fd_[peer], &f, sizeof(f))) {
    // The peer is gone (or closed normally). Only matters if we wait on it.
    close(ctl_fd_[peer]);
    ctl_fd_[peer] = -1;
    return;
  }
  std::string reason(std::min<uint32_t>(f.len, 4096), '\0');
  read_exact(ctl_fd_[peer], reason.data(), reason.size());
  ErrorKind kind = f.kind <= static_cast<uint32_t>(ErrorKind::kType) ? static_cast<ErrorKind>(f.kind)
                                                                     : ErrorKind::kAborted;
  throw CommError(kind, reason, true);
}

void TcpTransport::wait(const WaitItem* items, size_t n, const Deadline& deadline) {
  for (size_t i = 0; i < n; ++i)  // waiting for more than a closed stream still holds
    if (!items[i].send && staging_[items[i].peer].eof) lost(items[i].peer, "was closed by the peer", 0);
  std::vector<pollfd> fds;
  fds.reserve(n + size_);
  for (size_t i = 0; i < n; ++i)
    fds.push_back({data_fd_[items[i].peer], static_cast<short>(items[i].send ? POLLOUT : POLLIN), 0});
  fds.push_back({wake_fd_, POLLIN, 0});
  size_t first_ctl = fds.size();
  std::vector<int> ctl_peer;
  for (int p = 0; p < size_; ++p) {
    if (ctl_fd_[p] < 0) continue;
    fds.push_back({ctl_fd_[p], POLLIN, 0});
    ctl_peer.push_back(p);
  }
  // Busy-poll first (spin_budget_us), then sleep in poll().
  const auto spin_until = std::chrono::steady_clock::now() + std::chrono::microseconds(spin_us_);
  for (;;) {
    bool spinning = std::chrono::steady_clock::now() < spin_until;
    int rc = poll(fds.data(), fds.size(), spinning ? 0 : deadline.remaining_ms(1000));
    if (rc == 0 && spinning) continue;
    if (rc < 0 && errno != EINTR) throw_error(ErrorKind::kComm, strprintf("poll: %s", strerror(errno)));
    for (size_t i = first_ctl; rc > 0 && i < fds.size(); ++i) {
      if (fds[i].revents) {
        read_control(ctl_peer[i - first_ctl]);  // throws a peer's abort
        return;  // a closed control link: the fd set changed, let the caller retry
      }
    }
    if (rc > 0 && fds[first_ctl - 1].revents) {
      std::lock_guard<std::mutex> lk(self_abort_mu_);
      throw CommError(self_abort_kind_, self_abort_reason_, true);
    }
    for (size_t i = 0; rc > 0 && i < first_ctl - 1; ++i)
      if (fds[i].revents) return;  // readable, writable, or an error the next I/O call names
    if (deadline.expired()) throw_error(ErrorKind::kTimeout, describe_wait(rank_, items, n, deadline));
  }
}

void TcpTransport::abort_peers(ErrorKind kind, const std::string& reason) {
  AbortFrame f{static_cast<uint32_t>(kind), static_cast<uint32_t>(std::min<size_t>(reason.size(), 4096))};
  for (int p = 0; p < size_; ++p) {
    if (p == rank_ || ctl_fd_[p] < 0) continue;
    if (write_exact(ctl_fd_[p], &f, sizeof(f))) write_exact(ctl_fd_[p], reason.data(), f.len);
  }
}

void TcpTransport::abort_self(ErrorKind kind, const std::string& reason) {
  {
    std::lock_guard<std::mutex> lk(self_abort_mu_);
    self_abort_kind_ = kind;
    self_abort_reason_ = reason;
  }
  uint64_t one = 1;
  (void)!write(wake_fd_, &one, sizeof(one));  // stays readable: every later wait throws too
}

}  // namespace pycomm
