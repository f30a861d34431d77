// Collectives on GPU buffers: CUDA IPC staging on one host, pinned host
// staging across hosts (device.h).
#include "device.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "collectives.h"
#include "int8_seeds.h"
#include "../common/error.h"
#include "../cuda/cuda_kernels.h"
#include "../cuda/device_memory.h"
#include "../kernels/quantize_int8.h"

namespace pycomm {

namespace {

// Caches stay small: a training loop reuses the same few allocations, and a
// mapping kept open keeps a peer's freed memory alive.
constexpr size_t kMaxExported = 1024, kMaxImported = 256;

size_t align64(size_t n) { return (n + 63) & ~size_t(63); }

}  // namespace

DeviceState::~DeviceState() {
  // Queued work may still read our buffers and mappings. If it does not
  // drain (a dead peer's event that never fires), leak rather than free
  // memory a kernel may touch, or hang.
  if (stream_ && !cuda::stream_drain(stream_, 10.0)) return;
  for (auto& kv : imported_) cuda::ipc_close(kv.second);
  for (auto& kv : peer_events_) cuda::event_destroy(kv.second);
  // Our own IPC events stay (a few per communicator, freed at exit): a peer
  // may still have a wait for one queued, and CUDA leaves a wait on a
  // destroyed exported event undefined.
  cuda::host_free_pinned(pinned_);
  cuda::device_free(scratch_);
  cuda::stream_destroy(stream_);
}

std::string DeviceState::describe() const {
  if (device_ < 0) return "GPU path not started";
  if (single_host_)
    return strprintf("CUDA IPC on device %d, peer buffers read and written in place, streams "
                     "ordered by IPC events (%zu peer allocations mapped)", device_, imported_.size());
  return strprintf("pinned host staging over the host transport, device %d", device_);
}

DeviceState::Ref DeviceState::export_ref(const void* ptr, size_t bytes) {
  Ref ref{};
  ref.bytes = bytes;
  if (bytes == 0) return ref;
  const cuda::Allocation a = cuda::allocation_of(ptr);
  auto it = exported_.find(a.id);
  if (it == exported_.end()) {
    if (exported_.size() >= kMaxExported) exported_.clear();
    it = exported_.emplace(a.id, cuda::ipc_handle(a.base)).first;
  }
  ref.handle = it->second;
  ref.offset = static_cast<const uint8_t*>(ptr) - a.base;
  return ref;
}

uint8_t* DeviceState::import_ref(const Ref& ref) {
  if (ref.bytes == 0) return nullptr;
  std::string key(reinterpret_cast<const char*>(ref.handle.bytes), sizeof(ref.handle.bytes));
  auto it = imported_.find(key);
  if (it == imported_.end()) {
    it = imported_.emplace(key, static_cast<uint8_t*>(cuda::ipc_open(ref.handle, device_))).first;
  }
  return it->second + ref.offset;
}

void* DeviceState::peer_event(const cuda::IpcHandle& handle) {
  std::string key(reinterpret_cast<const char*>(handle.bytes), sizeof(handle.bytes));
  auto it = peer_events_.find(key);
  if (it == peer_events_.end()) it = peer_events_.emplace(key, cuda::event_open(handle, device_)).first;
  return it->second;
}

std::vector<DeviceState::Note> DeviceState::meet(OpContext& ctx, Note mine) {
  const int slot = next_event_;
  next_event_ = (next_event_ + 1) % kEvents;
  cuda::event_record(events_[slot], stream_);
  mine.event = event_handles_[slot];
  std::vector<Note> theirs(ctx.size());
  std::vector<SendSpec> sends;
  std::vector<RecvSpec> recvs;
  for (int p = 0; p < ctx.size(); ++p) {
    if (p == ctx.rank()) continue;
    sends.push_back({p, reinterpret_cast<const uint8_t*>(&mine), sizeof(mine)});
    recvs.push_back({p, sizeof(Note), Sink{reinterpret_cast<uint8_t*>(&theirs[p])}});
  }
  ctx.exchange(sends.data(), sends.size(), recvs.data(), recvs.size());
  // Each peer recorded before it sent, so these waits are for those records.
  for (int p = 0; p < ctx.size(); ++p)
    if (p != ctx.rank()) cuda::stream_wait_event(stream_, peer_event(theirs[p].event));
  return theirs;
}

void DeviceState::start(OpContext& ctx, const void* buffer, void* caller_stream) {
  const int device = cuda::device_of(buffer);
  if (device < 0) throw_error(ErrorKind::kValue, "the buffer is not in GPU memory");
  if (device_ < 0) {
    stream_ = cuda::stream_create(device);
    if (single_host_) {
      for (int i = 0; i < kEvents; ++i) {
        events_[i] = cuda::event_create_ipc(device);
        event_handles_[i] = cuda::event_handle(events_[i]);
      }
    }
    device_ = device;
  } else if (device != device_) {
    throw_error(ErrorKind::kValue,
                strprintf("this communicator's GPU buffers live on device %d, this one on device %d "
                          "(one communicator per GPU, as with NCCL)", device_, device));
  }
  cuda::stream_wait(stream_, caller_stream);
}

void DeviceState::run(OpContext& ctx, const OpArgs& a, void* caller_stream) {
  if (ctx.stamp.count == 0) {  // nothing to touch (pointers may be null): meet, to check the call
    ctx.sync_peers();
    return;
  }
  start(ctx, a.out ? a.out : a.in, caller_stream);
  if (single_host_) {
    run_ipc(ctx, a);
  } else {
    run_staged(ctx, a);
  }
  cuda::stream_wait(caller_stream, stream_);
}

uint8_t* DeviceState::pinned(size_t bytes) {
  if (pinned_bytes_ < bytes) {
    if (pinned_) cuda::stream_sync(stream_);  // the last op's copy out of it is done
    cuda::host_free_pinned(pinned_);
    pinned_ = nullptr;
    pinned_bytes_ = 0;
    pinned_ = static_cast<uint8_t*>(cuda::host_alloc_pinned(bytes));
    pinned_bytes_ = bytes;
  }
  return pinned_;
}

uint8_t* DeviceState::scratch(size_t bytes) {
  if (scratch_bytes_ < bytes) {
    // Grown rarely (x2): peers keep a mapping of every allocation they saw.
    const size_t want = std::max(bytes, 2 * scratch_bytes_);
    if (scratch_) cuda::stream_sync(stream_);  // the last op's kernels are done with it
    cuda::device_free(scratch_);
    scratch_ = nullptr;
    scratch_bytes_ = 0;
    scratch_ = static_cast<uint8_t*>(cuda::device_alloc(want, device_));
    scratch_bytes_ = want;
  }
  return scratch_;
}

void DeviceState::run_int8(OpContext& ctx, const void* in, float* out, size_t count,
                           const Int8Args& a, void* caller_stream) {
  if (!single_host_) {
    if (count == 0) return ctx.sync_peers();
    start(ctx, out, caller_stream);
    run_int8_staged(ctx, in, out, count, a);
    cuda::stream_wait(caller_stream, stream_);
    return;
  }
  if (ctx.size() > cuda::kMaxReduceSources)
    throw_error(ErrorKind::kValue, strprintf("compressed allreduce of GPU buffers takes at most %d "
                                             "ranks for now", cuda::kMaxReduceSources));
  if (count == 0) {
    ctx.sync_peers();
    return;
  }
  start(ctx, out, caller_stream);
  const int n = ctx.size(), r = ctx.rank();
  const size_t bs = a.block_size, nblk = kernels::quant_num_blocks(count, bs);
  Chunks blocks{nblk, n};
  auto first = [&](int p) { return std::min(count, blocks.offset(p) * bs); };
  auto length = [&](int p) { return std::min(count, (blocks.offset(p) + blocks.length(p)) * bs) - first(p); };
  // Layout, twice (this rank's quantized input; the owned sums): q bytes,
  // then scales; then this rank's own slice in float32.
  const size_t q_room = (count + 255) & ~size_t(255), half = q_room + nblk * sizeof(float);
  const size_t own_at = (2 * half + 255) & ~size_t(255);
  uint8_t* mine = scratch(own_at + length(r) * sizeof(float));
  auto q_of = [&](uint8_t* base) { return reinterpret_cast<int8_t*>(base); };
  auto s_of = [&](uint8_t* base) { return reinterpret_cast<float*>(base + q_room); };
  uint8_t* sums = mine + half;
  auto* own = reinterpret_cast<float*>(mine + own_at);
  const size_t es = dtype_size(ctx.stamp.dtype);

  // 1. This rank's own slice never travels: it enters its sum unquantized,
  //    with its residual, which it empties. The rest is quantized once (the
  //    whole input goes through the kernel, so stochastic rounding draws by
  //    element index as on the CPU; the own slice's bytes go unused).
  float* own_residual = a.worker_residual ? a.worker_residual + first(r) : nullptr;
  cuda::widen_to_float32(static_cast<const uint8_t*>(in) + first(r) * es, ctx.stamp.dtype, length(r),
                         own_residual, own, stream_);
  cuda::quantize_int8(in, ctx.stamp.dtype, count, bs, a.stochastic, int8_worker_seed(a.seed, r),
                      a.worker_residual, q_of(mine), s_of(mine), stream_);
  if (own_residual) cuda::zero_async(own_residual, length(r) * sizeof(float), stream_);
  // 2. Where every rank's scratch is (outputs stay private), once every
  //    rank's quantized bytes are there.
  const std::vector<Note> theirs = meet(ctx, {{}, export_ref(mine, 2 * half), export_ref(nullptr, 0)});
  std::vector<uint8_t*> scr(n);
  for (int p = 0; p < n; ++p) scr[p] = p == r ? mine : import_ref(theirs[p].in);
  // 3. The owner of each block-aligned slice sums every other rank's int8
  //    bytes of it and its own float32 values (rank order, float32) and
  //    quantizes the sum once.
  if (length(r)) {
    std::vector<const int8_t*> qs(n);
    std::vector<const float*> ss(n);
    for (int p = 0; p < n; ++p) {
      qs[p] = q_of(scr[p]) + first(r);
      ss[p] = s_of(scr[p]) + blocks.offset(r);
    }
    const float divisor = ctx.stamp.op == RedOp::kAvg ? static_cast<float>(n) : 1.0f;
    cuda::reduce_requantize_int8(qs.data(), ss.data(), n, length(r), bs, divisor, a.stochastic,
                                 int8_owner_seed(a.seed, first(r)), a.owner_residual,
                                 q_of(sums) + first(r), s_of(sums) + blocks.offset(r), own, r,
                                 stream_);
  }
  meet(ctx, {});  // every owner's sums are there
  // 4. Every rank dequantizes every owner's bytes (the owner's own too).
  for (int p = 0; p < n; ++p) {
    if (!length(p)) continue;
    uint8_t* s = scr[p] + half;
    cuda::dequantize_int8(q_of(s) + first(p), s_of(s) + blocks.offset(p), length(p), bs,
                          out + first(p), stream_);
  }
  meet(ctx, {});  // nobody reuses its scratch while a peer may read it
  cuda::stream_wait(caller_stream, stream_);
}

void DeviceState::run_int8_staged(OpContext& ctx, const void* in, float* out, size_t count,
                                  const Int8Args& a) {
  // The host's compressed allreduce on pinned copies of the input and of the
  // residuals (so the result is the CPU kernels', bitwise), copied back.
  const size_t in_bytes = count * ctx.elem(), out_bytes = count * sizeof(float);
  const size_t owned = allreduce_int8_owned(count, ctx.size(), ctx.rank(), a.block_size);
  const size_t worker_bytes = a.worker_residual ? out_bytes : 0;
  const size_t owner_bytes = a.owner_residual ? owned * sizeof(float) : 0;
  const size_t at_out = align64(in_bytes), at_worker = at_out + align64(out_bytes),
               at_owner = at_worker + align64(worker_bytes);
  uint8_t* host = pinned(at_owner + owner_bytes);
  Int8Args h = a;
  h.worker_residual = a.worker_residual ? reinterpret_cast<float*>(host + at_worker) : nullptr;
  h.owner_residual = a.owner_residual ? reinterpret_cast<float*>(host + at_owner) : nullptr;
  auto* host_out = reinterpret_cast<float*>(host + at_out);
  cuda::copy_async(host, in, in_bytes, stream_);
  cuda::copy_async(h.worker_residual, a.worker_residual, worker_bytes, stream_);
  cuda::copy_async(h.owner_residual, a.owner_residual, owner_bytes, stream_);
  cuda::stream_sync(stream_);
  allreduce_int8(ctx, host, host_out, count, h);
  cuda::copy_async(out, host_out, out_bytes, stream_);
  cuda::copy_async(a.worker_residual, h.worker_residual, worker_bytes, stream_);
  cuda::copy_async(a.owner_residual, h.owner_residual, owner_bytes, stream_);
}

void DeviceState::run_ipc(OpContext& ctx, const OpArgs& a) {
  const OpInfo& info = op_info(ctx.stamp.coll);
  if (!info.ipc) throw_error(ErrorKind::kValue, std::string("no GPU path for ") + info.name);
  const int n = ctx.size(), r = ctx.rank();
  const size_t es = ctx.elem();
  const size_t in_bytes = a.in ? extent_elems(info.in, a, n, ctx.rank()) * es : 0;
  const size_t out_bytes = a.out ? extent_elems(info.out, a, n, ctx.rank()) * es : 0;
  if (imported_.size() > kMaxImported) {  // between ops, once no queued kernel reads the mappings
    cuda::stream_sync(stream_);
    for (auto& kv : imported_) cuda::ipc_close(kv.second);
    imported_.clear();
  }
  // 1. Every rank learns where every other rank's buffers are, and our
  //    stream waits until every rank's input is ready.
  const std::vector<Note> theirs = meet(ctx, {{}, export_ref(a.in, in_bytes), export_ref(a.out, out_bytes)});
  IpcView v{ctx, a, std::vector<const uint8_t*>(n), std::vector<uint8_t*>(n), stream_};
  for (int p = 0; p < n; ++p) {
    v.ins[p] = p == r ? static_cast<const uint8_t*>(a.in) : import_ref(theirs[p].in);
    v.outs[p] = p == r ? static_cast<uint8_t*>(a.out) : import_ref(theirs[p].out);
  }
  // 2. The data movement, on our stream.
  info.ipc(v);
  // 3. Our stream goes on once no peer reads our input or writes our output.
  meet(ctx, {});
}

void DeviceState::run_staged(OpContext& ctx, const OpArgs& a) {
  const OpInfo& info = op_info(ctx.stamp.coll);
  const int n = ctx.size();
  const size_t es = ctx.elem();
  const size_t in_bytes = a.in ? extent_elems(info.in, a, n, ctx.rank()) * es : 0;
  const size_t out_bytes = a.out ? extent_elems(info.out, a, n, ctx.rank()) * es : 0;
  const size_t in_room = align64(in_bytes);
  uint8_t* host_in = pinned(in_room + out_bytes);
  OpArgs h = a;
  h.in = a.in ? host_in : nullptr;
  h.out = a.out ? host_in + in_room : nullptr;
  if (in_bytes) cuda::copy_async(host_in, a.in, in_bytes, stream_);
  cuda::stream_sync(stream_);
  info.host(ctx, h);
  if (out_bytes) cuda::copy_async(a.out, h.out, out_bytes, stream_);
}

}  // namespace pycomm
