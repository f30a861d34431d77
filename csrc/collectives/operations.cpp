// The table of operations (operation.h): one row each. The entry points are
// in the op's own file (host) and in device_ops.cpp (GPU buffers on one host).
#include <cstring>

#include "collectives.h"
#include "device.h"

namespace pycomm {
namespace {

using E = Extent;

// Columns: coll, name, reduces, rooted, int8, counts, in_place, in, out, busbw, host, algorithm, ipc.
constexpr OpInfo kOps[] = {
    {Coll::kAllreduce, "allreduce", true, false, false, false, true, E::kCount, E::kCount, BusBw::kAllreduce,
     [](OpContext& c, const OpArgs& a) { allreduce(c, a.in, a.out, a.count); }, allreduce_algorithm,
     ipc_allreduce},
    {Coll::kReduceScatter, "reduce_scatter", true, false, false, false, false, E::kRanks, E::kCount, BusBw::kSpread,
     [](OpContext& c, const OpArgs& a) { reduce_scatter(c, a.in, a.out, a.count); },
     reduce_scatter_algorithm, ipc_reduce_scatter},
    {Coll::kAllgather, "allgather", false, false, false, false, false, E::kCount, E::kRanks, BusBw::kSpread,
     [](OpContext& c, const OpArgs& a) { allgather(c, a.in, a.out, a.count); }, allgather_algorithm,
     ipc_allgather},
    // In place: `out` is the buffer (`in` is read, when given and not `out`, at the root only).
    {Coll::kBroadcast, "broadcast", false, true, false, false, true, E::kCount, E::kCount, BusBw::kOne,
     [](OpContext& c, const OpArgs& a) { broadcast(c, a.in, a.out, a.count, a.root); },
     broadcast_algorithm, ipc_broadcast},
    {Coll::kBarrier, "barrier", false, false, false, false, false, E::kNone, E::kNone, BusBw::kOne,
     [](OpContext& c, const OpArgs&) { barrier(c); }, barrier_algorithm, nullptr},
    {Coll::kAllreduceInt8, "allreduce_int8", true, false, true, false, false, E::kCount, E::kCount, BusBw::kAllreduce,
     [](OpContext& c, const OpArgs& a) { allreduce_int8(c, a.in, static_cast<float*>(a.out), a.count, a.int8); },
     int8_algorithm, nullptr},  // GPU buffers: DeviceState::run_int8
    {Coll::kReduceScatterInt8, "reduce_scatter_int8", true, false, true, false, false, E::kRanks, E::kCount,
     BusBw::kSpread,
     [](OpContext& c, const OpArgs& a) {
       reduce_scatter_int8(c, a.in, static_cast<float*>(a.out), a.count, a.int8);
     },
     int8_algorithm, nullptr},
    {Coll::kGather, "gather", false, true, false, false, false, E::kCount, E::kRanksAtRoot, BusBw::kSpread,
     [](OpContext& c, const OpArgs& a) { gather(c, a.in, a.out, a.count, a.root); }, gather_algorithm,
     ipc_gather},
    {Coll::kScatter, "scatter", false, true, false, false, false, E::kRanksAtRoot, E::kCount, BusBw::kSpread,
     [](OpContext& c, const OpArgs& a) { scatter(c, a.in, a.out, a.count, a.root); }, scatter_algorithm,
     ipc_scatter},
    {Coll::kReduce, "reduce", true, true, false, false, true, E::kCount, E::kCountAtRoot, BusBw::kOne,
     [](OpContext& c, const OpArgs& a) { reduce(c, a.in, a.out, a.count, a.root); }, reduce_algorithm,
     ipc_reduce},
    {Coll::kAlltoall, "alltoall", false, false, false, false, false, E::kRanks, E::kRanks, BusBw::kSpread,
     [](OpContext& c, const OpArgs& a) { alltoall(c, a.in, a.out, a.count); }, alltoall_algorithm,
     ipc_alltoall},
    {Coll::kAllgatherV, "allgatherv", false, false, false, true, false, E::kMine, E::kSum, BusBw::kSpread,
     [](OpContext& c, const OpArgs& a) { allgatherv(c, a.in, a.out, a.counts); }, allgather_algorithm,
     ipc_allgatherv},
    {Coll::kReduceScatterV, "reduce_scatterv", true, false, false, true, false, E::kSum, E::kMine, BusBw::kSpread,
     [](OpContext& c, const OpArgs& a) { reduce_scatterv(c, a.in, a.out, a.counts); },
     reduce_scatter_algorithm, ipc_reduce_scatterv},
    // No GPU path on one host yet: a rank would need its peers' send offsets.
    {Coll::kAlltoallV, "alltoallv", false, false, false, true, false, E::kSum, E::kRecvSum, BusBw::kSpread,
     [](OpContext& c, const OpArgs& a) { alltoallv(c, a.in, a.out, a.counts, a.recv_counts); },
     alltoall_algorithm, nullptr},
    {Coll::kAllgatherInt8, "allgather_int8", false, false, true, false, false, E::kCount, E::kRanks,
     BusBw::kSpread, [](OpContext& c, const OpArgs& a) { allgather_int8(c, a.in, a.out, a.count, a.int8); },
     allgather_int8_algorithm, nullptr},
};
constexpr size_t kNumOps = sizeof(kOps) / sizeof(kOps[0]);
constexpr bool in_coll_order() {
  for (size_t i = 0; i < kNumOps; ++i)
    if (static_cast<size_t>(kOps[i].coll) != i + 1) return false;
  return kNumOps + 1 == kNumColls;
}
static_assert(in_coll_order(), "a row for every Coll, in Coll order");

}  // namespace

namespace {

uint64_t sum_of(const uint64_t* counts, int size) {
  uint64_t s = 0;
  for (int p = 0; counts && p < size; ++p) s += counts[p];
  return s;
}

}  // namespace

bool extent_present(Extent e, const OpArgs& a, int rank) {
  return e != Extent::kNone && (rank == a.root || (e != Extent::kCountAtRoot && e != Extent::kRanksAtRoot));
}

size_t extent_elems(Extent e, const OpArgs& a, int size, int rank) {
  if (!extent_present(e, a, rank)) return 0;
  switch (e) {
    case Extent::kNone: return 0;
    case Extent::kCount:
    case Extent::kCountAtRoot: return a.count;
    case Extent::kRanks:
    case Extent::kRanksAtRoot: return a.count * static_cast<size_t>(size);
    case Extent::kMine: return a.counts ? a.counts[rank] : 0;
    case Extent::kSum: return sum_of(a.counts, size);
    case Extent::kRecvSum: return sum_of(a.recv_counts, size);
  }
  return 0;
}

uint64_t stamp_count(const OpInfo& info, const OpArgs& a, int size) {
  if (!info.counts) return a.count;
  return info.coll == Coll::kAlltoallV ? 0 : sum_of(a.counts, size);
}

double busbw_factor(BusBw b, int size) {
  const double n = size;
  switch (b) {
    case BusBw::kAllreduce: return 2 * (n - 1) / n;
    case BusBw::kSpread: return (n - 1) / n;
    case BusBw::kOne: return 1;
  }
  return 1;
}

const OpInfo& op_info(Coll c) { return kOps[static_cast<size_t>(c) - 1]; }

const OpInfo* find_op(const std::string& name) {
  for (const OpInfo& op : kOps)
    if (name == op.name) return &op;
  return nullptr;
}

const OpInfo* op_table(size_t* n) {
  *n = kNumOps;
  return kOps;
}

}  // namespace pycomm
