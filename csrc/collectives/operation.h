// Every operation pycomm runs, described once (operations.cpp): its name, what
// it takes (a reduction op, a root), how big its buffers are, its host and GPU
// entry points, the algorithm it picks (for logs) and its bus-bandwidth factor
// (for the bench). The frame stamp, error messages, the communicator's
// dispatch, the GPU paths, the binding's checks and the Python layer all read
// this table; adding an operation is a row here and a file with its algorithm
// (docs/ARCHITECTURE.md, "Adding an operation").
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "../common/dtype.h"

namespace pycomm {

// The numbers travel in frames: append, never renumber.
enum class Coll : uint8_t {
  kAllreduce = 1,
  kReduceScatter = 2,
  kAllgather = 3,
  kBroadcast = 4,
  kBarrier = 5,
  kAllreduceInt8 = 6,  // compressed (compressed.cpp): int8 on the wire
  kReduceScatterInt8 = 7,
  kGather = 8,
  kScatter = 9,
  kReduce = 10,
  kAlltoall = 11,
  kAllgatherV = 12,
  kReduceScatterV = 13,
  kAlltoallV = 14,
  kAllgatherInt8 = 15,
};
constexpr uint8_t kNumColls = 16;  // one past the last

// The int8 collectives' own arguments (compressed.cpp).
struct Int8Args {
  size_t block_size = 64;
  bool stochastic = false;
  uint64_t seed = 0;
  float* worker_residual = nullptr;  // error feedback for this rank's whole input, or null
  float* owner_residual = nullptr;   // allreduce: for the quantized sum of the owned slice, or null
  DType out_dtype = DType::kFloat32;  // allgather: float32, or the input's float16/bfloat16
};

// What one call hands its algorithm. Buffers are raw bytes of the op's dtype
// (host memory, or device memory on the GPU paths); `count` is in elements,
// and each row's `in`/`out` extents say what it counts.
struct OpArgs {
  const void* in = nullptr;
  void* out = nullptr;
  size_t count = 0;
  int root = 0;
  // The uneven ("v") rows: elements per rank (allgatherv, reduce_scatterv:
  // every rank passes the same list) or sent to each peer (alltoallv), and
  // received from each peer (alltoallv); `size` entries each.
  const uint64_t* counts = nullptr;
  const uint64_t* recv_counts = nullptr;
  Int8Args int8;  // int8 rows only
};

// How many elements a buffer of a call has on rank `rank` of `size`.
enum class Extent : uint8_t {
  kNone,         // no buffer
  kCount,        // count
  kRanks,        // size * count
  kCountAtRoot,  // count at the root, no buffer elsewhere
  kRanksAtRoot,  // size * count at the root, no buffer elsewhere
  kMine,         // counts[rank]
  kSum,          // the sum of counts
  kRecvSum,      // the sum of recv_counts
};
size_t extent_elems(Extent e, const OpArgs& a, int size, int rank);
// Whether rank `rank` has a buffer of extent `e` at all.
bool extent_present(Extent e, const OpArgs& a, int rank);

// nccl-tests' bus bandwidth: algbw times this, for size n.
enum class BusBw : uint8_t {
  kAllreduce,  // 2(n-1)/n: every byte crosses a link twice
  kSpread,     // (n-1)/n: reduce-scatter, allgather
  kOne,        // 1: broadcast, barrier
};
double busbw_factor(BusBw b, int size);

class OpContext;
struct Tuning;
struct IpcView;  // device.h

struct OpInfo {
  Coll coll;
  const char* name;  // "allreduce": Python's name for it, and logs'
  bool reduces;      // takes a reduction op
  bool rooted;       // takes a root
  bool int8;         // int8 on the wire (messages move in bytes); out float32 or Int8Args::out_dtype
  bool counts;       // takes OpArgs::counts (and recv_counts): the uneven forms
  bool in_place;     // out may be in (no out given: the result replaces x)
  Extent in, out;
  BusBw busbw;
  void (*host)(OpContext& ctx, const OpArgs& a);
  // The algorithm host() picks for `block_bytes` (one rank's block) on
  // `size` ranks; kept next to the choice in the op's file.
  const char* (*algorithm)(size_t block_bytes, int size, const Tuning& tuning);
  // GPU buffers of ranks on one host (device.cpp); null: no GPU path. Across
  // hosts GPU buffers are staged through host memory and run `host`.
  void (*ipc)(IpcView& v);
};

// The row of `c` (a valid Coll), or of the name; null for an unknown name.
const OpInfo& op_info(Coll c);
const OpInfo* find_op(const std::string& name);
// The stamp's count, which every rank must agree on: `count`, or for the
// uneven forms the sum of counts (alltoallv: 0, each message's size is
// checked on its own).
uint64_t stamp_count(const OpInfo& info, const OpArgs& a, int size);
// Every row, in Coll order.
const OpInfo* op_table(size_t* n);

}  // namespace pycomm
