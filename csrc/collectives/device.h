// Collectives on GPU buffers (device.cpp).
//
// Ranks on one host work on each other's buffers directly: at the start of
// an op every rank sends its peers the CUDA IPC handles of the allocations
// holding its input and output (with the offsets), each peer maps them once
// (cached by handle), and kernels read and write peer memory in place. An
// allreduce is two-shot in one kernel: rank r reduces slice r of every
// rank's input in rank order and writes it into every rank's output in the
// same pass; reduce-scatter, allgather and broadcast pull what they need. No
// staging copy, no byte through host memory.
//
// The host never waits for the GPU. Ranks meet twice per op over the host
// transport (at the start, stamped so mismatched calls are caught, and at
// the end); at each meeting a rank records an IPC event on its stream and
// sends its handle, and every peer's stream waits for it on the GPU. So a
// rank's kernels start after every peer's input is ready, and its stream
// goes on only after every peer is done with its buffers.
//
// Ops run on a stream of pycomm's own, ordered after the caller's stream,
// and the caller's stream is ordered after the op (as with NCCL): the call
// returns once the work is queued. Ranks on several hosts stage through
// pinned host memory and run the host algorithms.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include "collectives.h"
#include "exchange.h"
#include "../cuda/device_memory.h"

namespace pycomm {

// What an operation's GPU path on one host works on (OpInfo::ipc): every
// rank's input and output mapped into this process, and this rank's stream.
// The op queues its copies and kernels on `stream`; every rank's input is
// ready when it runs, and no rank reuses its buffers until every rank's
// queued work is done.
struct IpcView {
  OpContext& ctx;
  const OpArgs& args;
  std::vector<const uint8_t*> ins;  // ins[p]: rank p's input (null where it passes none)
  std::vector<uint8_t*> outs;
  void* stream;
};
// The GPU paths of the operations that have one (device_ops.cpp).
void ipc_allreduce(IpcView& v);
void ipc_reduce_scatter(IpcView& v);
void ipc_allgather(IpcView& v);
void ipc_broadcast(IpcView& v);
void ipc_gather(IpcView& v);
void ipc_scatter(IpcView& v);
void ipc_reduce(IpcView& v);
void ipc_alltoall(IpcView& v);
void ipc_allgatherv(IpcView& v);
void ipc_reduce_scatterv(IpcView& v);

class DeviceState {
 public:
  // single_host: every rank shares this host (CUDA IPC); else host staging.
  explicit DeviceState(bool single_host) : single_host_(single_host) {}
  ~DeviceState();
  DeviceState(const DeviceState&) = delete;
  DeviceState& operator=(const DeviceState&) = delete;

  // Runs ctx.stamp.coll (operation.h) on GPU buffers: a.in / a.out are
  // device pointers sized as the op's row says.
  void run(OpContext& ctx, const OpArgs& a, void* caller_stream);
  // The compressed allreduce (ctx.stamp.coll kAllreduceInt8), residuals
  // (a.*_residual) in GPU memory. On one host: the two-shot of compressed.cpp
  // with the CUDA kernels, every rank's int8 bytes read in place by their
  // owners; across hosts: compressed.cpp itself on pinned host copies.
  void run_int8(OpContext& ctx, const void* in, float* out, size_t count, const Int8Args& a,
                void* caller_stream);
  // "CUDA IPC on device 0 (3 peer allocations mapped)", for logs and repr.
  std::string describe() const;

  // A buffer as a peer finds it: its allocation's IPC handle and the offset.
  struct Ref {
    cuda::IpcHandle handle;
    uint64_t offset;
    uint64_t bytes;
  };
  // What a rank tells its peers at a meeting: the event it recorded after its
  // work so far, and (at an op's first meeting) where its buffers are.
  struct Note {
    cuda::IpcHandle event;
    Ref in, out;
  };

 private:
  Ref export_ref(const void* ptr, size_t bytes);
  uint8_t* import_ref(const Ref& ref);
  void run_ipc(OpContext& ctx, const OpArgs& a);
  void run_staged(OpContext& ctx, const OpArgs& a);
  void run_int8_staged(OpContext& ctx, const void* in, float* out, size_t count, const Int8Args& a);
  void start(OpContext& ctx, const void* buffer, void* caller_stream);
  // Records our event, swaps notes with every peer, and queues waits for
  // their events on our stream; returns the peers' notes (ours left empty).
  std::vector<Note> meet(OpContext& ctx, Note mine);
  void* peer_event(const cuda::IpcHandle& handle);
  uint8_t* scratch(size_t bytes);  // device memory of our own, IPC-exportable
  uint8_t* pinned(size_t bytes);   // page-locked host staging, several hosts

  const bool single_host_;
  int device_ = -1;
  void* stream_ = nullptr;
  static constexpr int kEvents = 4;  // two would do: a rank reuses one only
                                     // after every peer has met it twice since
  void* events_[kEvents] = {};
  cuda::IpcHandle event_handles_[kEvents] = {};
  int next_event_ = 0;
  std::map<std::string, void*> peer_events_;  // peer's event handle -> opened event
  std::unordered_map<uint64_t, cuda::IpcHandle> exported_;  // allocation id -> its handle
  std::map<std::string, uint8_t*> imported_;                // peer handle -> mapped base
  uint8_t* pinned_ = nullptr;  // host staging, several hosts
  size_t pinned_bytes_ = 0;
  uint8_t* scratch_ = nullptr;  // int8 collectives: this rank's quantized input and owned sums
  size_t scratch_bytes_ = 0;
};

}  // namespace pycomm
