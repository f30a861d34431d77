// Ranks as threads of one process, over the shared-memory and the TCP
// transport: a native test of the op queue, the worker thread, Work, abort
// and the transports, for ThreadSanitizer (Python cannot host TSan; see
// tests/sanitize.sh thread, which builds and runs this). Exit status 0 when
// every result is right.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "comm/communicator.h"
#include "transport/shm_transport.h"
#include "transport/tcp_transport.h"

using namespace pycomm;

namespace {

// The bootstrap allgather between threads.
class Board {
 public:
  explicit Board(int n) : n_(n) {}
  std::vector<std::string> allgather(int rank, int round, const std::string& mine) {
    std::unique_lock<std::mutex> lk(mu_);
    auto& slots = rounds_[round];
    slots.resize(n_);
    slots[rank] = mine;
    if (++filled_[round] == n_) cv_.notify_all();
    cv_.wait(lk, [&] { return filled_[round] == n_; });
    return slots;
  }

 private:
  const int n_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<int, std::vector<std::string>> rounds_;
  std::map<int, int> filled_;
};

std::atomic<int> failures{0};

void expect(bool ok, const char* what, int rank) {
  if (!ok) {
    std::fprintf(stderr, "rank %d: %s\n", rank, what);
    failures++;
  }
}

std::unique_ptr<Transport> make_transport(const std::string& kind, int rank, int n, Board& board, int first_round) {
  BootstrapAllgather ag = [&board, rank, round = first_round](const std::string& mine) mutable {
    return board.allgather(rank, round++, mine);
  };
  if (kind == "shm") return std::make_unique<ShmTransport>(rank, n, ag, ShmOptions{});
  TcpOptions o;
  o.token = std::string(32, 'k');
  return std::make_unique<TcpTransport>(rank, n, ag, o);
}

// With point-to-point links too (their bootstrap rounds after the collectives').
std::unique_ptr<Communicator> make_comm(const std::string& kind, int rank, int n, Board& board) {
  auto tr = make_transport(kind, rank, n, board, 0);
  auto p2p = make_transport(kind, rank, n, board, 100);
  return std::make_unique<Communicator>(std::move(tr), Tuning{}, std::move(p2p));
}

// Point-to-point with two threads of each rank driving its engine at once:
// one receives (a rendezvous message and an eager one) while the other
// sends, every rank to the next.
void p2p_case(const std::string& kind) {
  const int n = 2;
  Board board(n);
  std::vector<std::thread> ranks;
  for (int r = 0; r < n; ++r) {
    ranks.emplace_back([&, r] {
      auto comm = make_comm(kind, r, n, board);
      std::shared_ptr<P2PEngine> e = comm->p2p();
      const size_t big = 1 << 20;  // floats: 4 MiB, rendezvous; on shm copied by receiver and sender (HELP)
      std::vector<float> out(big, float(r + 1)), in(big, 0.0f), small_out(3, float(r)), small_in(3, -1.0f);
      auto op = [](bool send, int peer, int tag, std::vector<float>& v) {
        auto o = std::make_shared<P2POp>();
        o->send = send;
        o->peer = peer;
        o->tag = tag;
        o->buf = reinterpret_cast<uint8_t*>(v.data());
        o->bytes = v.size() * sizeof(float);
        o->deadline = Deadline::after(60);
        return o;
      };
      const int to = (r + 1) % n, from = (r + n - 1) % n;
      auto rbig = op(false, from, 1, in), rsmall = op(false, kAnySource, 2, small_in);
      e->post({rbig, rsmall});
      std::thread sender([&] {
        auto sbig = op(true, to, 1, out), ssmall = op(true, to, 2, small_out);
        e->post({ssmall, sbig});
        e->wait(*sbig, -1);
        e->wait(*ssmall, -1);
        expect(!sbig->work->failed() && !ssmall->work->failed(),
               (sbig->work->error_message() + ssmall->work->error_message()).c_str(), r);
      });
      e->wait(*rbig, -1);
      e->wait(*rsmall, -1);
      sender.join();
      expect(!rbig->work->failed() && std::count(in.begin(), in.end(), float(from + 1)) == long(big),
             ("p2p large message wrong " + rbig->work->error_message()).c_str(), r);
      expect(!rsmall->work->failed() && rsmall->source == from && small_in[2] == float(from), "p2p small message wrong", r);
      comm->close();
    });
  }
  for (auto& t : ranks) t.join();
}

CollArgs args(Coll c, const void* in, void* out, size_t count) {
  CollArgs a;
  a.coll = c;
  a.dtype = DType::kFloat32;
  a.in = in;
  a.out = out;
  a.count = count;
  a.timeout_s = 60;
  return a;
}

void rank_main(const std::string& kind, int rank, int n, Board& board) {
  auto comm = make_comm(kind, rank, n, board);
  for (int it = 0; it < 60; ++it) {
    const size_t count = 1 + (it * 7919) % 70000;
    std::vector<std::vector<float>> xs(4, std::vector<float>(count * n, float(rank + 1)));
    std::vector<float> rs(count), ag(count * n), q(count * n, 1.0f);
    std::vector<std::shared_ptr<Work>> works;
    works.push_back(comm->submit(args(Coll::kAllreduce, xs[0].data(), xs[0].data(), count), true));
    works.push_back(comm->submit(args(Coll::kReduceScatter, xs[1].data(), rs.data(), count), true));
    works.push_back(comm->submit(args(Coll::kAllgather, xs[2].data(), ag.data(), count), true));
    CollArgs i8 = args(Coll::kAllreduceInt8, q.data(), q.data(), count * n);
    works.push_back(comm->submit(i8, it % 2 == 0));
    comm->submit(args(Coll::kBarrier, nullptr, nullptr, 0), false);  // blocking, behind the queue
    for (auto& w : works) {
      w->wait(-1);
      expect(!w->failed(), w->error_message().c_str(), rank);
    }
    const float sum = n * (n + 1) / 2.0f;
    expect(xs[0][count - 1] == sum && rs[0] == sum && ag[count * n - 1] == n, "wrong result", rank);
    expect(q[0] > n - 0.05f && q[0] < n + 0.05f, "wrong int8 result", rank);
  }
  comm->close();
}

// One rank never shows up; abort() from another thread fails the waiting op
// and the queued ones.
void abort_case() {
  Board board(2);
  std::unique_ptr<Communicator> comms[2];
  std::thread t1([&] { comms[1] = make_comm("shm", 1, 2, board); });
  comms[0] = make_comm("shm", 0, 2, board);
  t1.join();
  std::vector<float> x(1000, 1.0f);
  auto w1 = comms[0]->submit(args(Coll::kAllreduce, x.data(), x.data(), x.size()), true);
  auto w2 = comms[0]->submit(args(Coll::kAllreduce, x.data(), x.data(), x.size()), true);
  std::thread killer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    comms[0]->abort("test abort");
  });
  w1->wait(-1);
  w2->wait(-1);
  killer.join();
  expect(w1->failed() && w2->failed(), "abort left an op running", 0);
  comms[0]->close();
  comms[1]->close();
}

}  // namespace

int main() {
  for (const char* kind : {"shm", "tcp"}) {
    for (int n : {2, 3}) {
      Board board(n);
      std::vector<std::thread> ranks;
      for (int r = 0; r < n; ++r) ranks.emplace_back(rank_main, std::string(kind), r, n, std::ref(board));
      for (auto& t : ranks) t.join();
      std::printf("%s, %d ranks: %s\n", kind, n, failures ? "FAILED" : "ok");
    }
  }
  abort_case();
  std::printf("abort: %s\n", failures ? "FAILED" : "ok");
  for (const char* kind : {"shm", "tcp"}) {
    p2p_case(kind);
    std::printf("p2p over %s: %s\n", kind, failures ? "FAILED" : "ok");
  }
  return failures ? 1 : 0;
}
