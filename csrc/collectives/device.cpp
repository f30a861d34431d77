// Collectives on GPU buffers: CUDA IPC staging on one host, pinned host
// staging across hosts (device.h).
#include "device.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "collectives.h"
#include "../common/error.h"
#include "../cuda/cuda_kernels.h"
#include "../cuda/device_memory.h"
#include "../kernels/quantize_int8.h"

namespace pycomm {

namespace {

// What a rank tells its peers at the start of an op.
struct OpRefs {
  DeviceState::Ref in, out;
};

// Every rank's refs (this rank's slot left empty), in one stamped exchange.
std::vector<OpRefs> exchange_refs(OpContext& ctx, const OpRefs& mine) {
  std::vector<OpRefs> theirs(ctx.size());
  std::vector<SendSpec> sends;
  std::vector<RecvSpec> recvs;
  for (int p = 0; p < ctx.size(); ++p) {
    if (p == ctx.rank()) continue;
    sends.push_back({p, reinterpret_cast<const uint8_t*>(&mine), sizeof(mine)});
    recvs.push_back({p, sizeof(OpRefs), Sink{reinterpret_cast<uint8_t*>(&theirs[p])}});
  }
  ctx.exchange(sends.data(), sends.size(), recvs.data(), recvs.size());
  return theirs;
}

// Caches stay small: a training loop reuses the same few allocations, and a
// mapping kept open keeps a peer's freed memory alive.
constexpr size_t kMaxExported = 1024, kMaxImported = 256;

}  // namespace

DeviceState::~DeviceState() {
  for (auto& kv : imported_) cuda::ipc_close(kv.second);
  cuda::host_free_pinned(pinned_);
  cuda::device_free(scratch_);
  cuda::stream_destroy(stream_);
}

std::string DeviceState::describe() const {
  if (device_ < 0) return "GPU path not started";
  if (single_host_)
    return strprintf("CUDA IPC on device %d, peer buffers read and written in place (%zu peer "
                     "allocations mapped)", device_, imported_.size());
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

void DeviceState::start(OpContext& ctx, const void* buffer, void* caller_stream) {
  const int device = cuda::device_of(buffer);
  if (device < 0) throw_error(ErrorKind::kValue, "the buffer is not in GPU memory");
  if (device_ < 0) {
    device_ = device;
    stream_ = cuda::stream_create(device);
  } else if (device != device_) {
    throw_error(ErrorKind::kValue,
                strprintf("this communicator's GPU buffers live on device %d, this one on device %d "
                          "(one communicator per GPU, as with NCCL)", device_, device));
  }
  cuda::stream_wait(stream_, caller_stream);
}

void DeviceState::run(OpContext& ctx, const void* in, void* out, size_t count, int root,
                      void* caller_stream) {
  if (count == 0) {  // nothing to touch (pointers may be null): meet, to check the call
    ctx.sync_peers();
    return;
  }
  start(ctx, out ? out : in, caller_stream);
  auto* i = static_cast<const uint8_t*>(in);
  auto* o = static_cast<uint8_t*>(out);
  if (single_host_) {
    run_ipc(ctx, i, o, count, root);
  } else {
    run_staged(ctx, i, o, count, root);
  }
  cuda::stream_sync(stream_);
}

uint8_t* DeviceState::scratch(size_t bytes) {
  if (scratch_bytes_ < bytes) {
    // Grown rarely (x2): peers keep a mapping of every allocation they saw.
    const size_t want = std::max(bytes, 2 * scratch_bytes_);
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
  if (!single_host_)
    throw_error(ErrorKind::kValue, "compressed allreduce of GPU buffers needs every rank on one host "
                                   "for now (move the tensor to the CPU)");
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
  // Layout, twice (this rank's quantized input; the owned sums): q bytes, then scales.
  const size_t q_room = (count + 255) & ~size_t(255), half = q_room + nblk * sizeof(float);
  uint8_t* mine = scratch(2 * half);
  auto q_of = [&](uint8_t* base) { return reinterpret_cast<int8_t*>(base); };
  auto s_of = [&](uint8_t* base) { return reinterpret_cast<float*>(base + q_room); };
  uint8_t* sums = mine + half;

  // 1. Quantize this rank's whole input once (stochastic rounding: a seed per
  //    rank, and another for the owners).
  cuda::quantize_int8(in, ctx.stamp.dtype, count, bs, a.stochastic, a.seed ^ (0x9E3779B97F4A7C15ull * (r + 1)),
                      a.worker_residual, q_of(mine), s_of(mine), stream_);
  cuda::stream_sync(stream_);
  // 2. Where every rank's scratch and output are.
  const std::vector<OpRefs> theirs =
      exchange_refs(ctx, {export_ref(mine, 2 * half), export_ref(nullptr, 0)});  // outputs stay private
  std::vector<uint8_t*> scr(n);
  for (int p = 0; p < n; ++p) scr[p] = p == r ? mine : import_ref(theirs[p].in);
  // 3. The owner of each block-aligned slice sums every rank's int8 bytes
  //    of it (rank order, float32) and quantizes the sum once.
  Chunks blocks{nblk, n};
  auto first = [&](int p) { return std::min(count, blocks.offset(p) * bs); };
  auto length = [&](int p) { return std::min(count, (blocks.offset(p) + blocks.length(p)) * bs) - first(p); };
  if (length(r)) {
    std::vector<const int8_t*> qs(n);
    std::vector<const float*> ss(n);
    for (int p = 0; p < n; ++p) {
      qs[p] = q_of(scr[p]) + first(r);
      ss[p] = s_of(scr[p]) + blocks.offset(r);
    }
    const float divisor = ctx.stamp.op == RedOp::kAvg ? static_cast<float>(n) : 1.0f;
    cuda::reduce_requantize_int8(qs.data(), ss.data(), n, length(r), bs, divisor, a.stochastic,
                                 a.seed ^ 0x6f776e6572ull ^ first(r), a.owner_residual,
                                 q_of(sums) + first(r), s_of(sums) + blocks.offset(r), stream_);
  }
  cuda::stream_sync(stream_);
  ctx.sync_peers();
  // 4. Every rank dequantizes every owner's bytes (the owner's own too).
  for (int p = 0; p < n; ++p) {
    if (!length(p)) continue;
    uint8_t* s = scr[p] + half;
    cuda::dequantize_int8(q_of(s) + first(p), s_of(s) + blocks.offset(p), length(p), bs,
                          out + first(p), stream_);
  }
  cuda::stream_sync(stream_);
  ctx.sync_peers();  // nobody reuses its scratch while a peer may read it
}

void DeviceState::run_ipc(OpContext& ctx, const uint8_t* in, uint8_t* out, size_t count, int root) {
  const int n = ctx.size(), r = ctx.rank();
  const size_t es = ctx.elem();
  const Coll coll = ctx.stamp.coll;
  const size_t in_bytes = count * es * (coll == Coll::kReduceScatter ? n : 1);
  const size_t out_bytes = count * es * (coll == Coll::kAllgather ? n : 1);
  if (imported_.size() > kMaxImported) {  // between ops: nothing reads the mappings now
    for (auto& kv : imported_) cuda::ipc_close(kv.second);
    imported_.clear();
  }

  // 1. This rank's input is ready (the caller's stream drained into ours),
  //    and every rank learns where every other rank's buffers are.
  cuda::stream_sync(stream_);
  const std::vector<OpRefs> theirs =
      exchange_refs(ctx, {export_ref(in, in_bytes), export_ref(out, out_bytes)});
  std::vector<const uint8_t*> ins(n);
  std::vector<uint8_t*> outs(n);
  for (int p = 0; p < n; ++p) {
    ins[p] = p == r ? in : import_ref(theirs[p].in);
    outs[p] = p == r ? out : import_ref(theirs[p].out);
  }

  // 2. The data movement, on our stream.
  const DType dt = ctx.stamp.dtype;
  const bool avg = ctx.stamp.op == RedOp::kAvg;
  const RedOp op = avg ? RedOp::kSum : ctx.stamp.op;
  std::vector<const void*> srcs(n);
  // Every rank's data at `offset`, reduced in rank order into dst
  // (kMaxReduceSources per launch, each later launch folding dst in first).
  auto reduce_into = [&](uint8_t* dst, size_t offset, size_t len) {
    if (len == 0) return;
    for (int p = 0; p < n; ++p) srcs[p] = ins[p] + offset;
    int done = std::min(n, cuda::kMaxReduceSources);
    cuda::reduce_n(dst, srcs.data(), done, len, dt, op, stream_);
    while (done < n) {
      const int more = std::min(n - done, cuda::kMaxReduceSources - 1);
      std::vector<const void*> group{dst};
      group.insert(group.end(), srcs.begin() + done, srcs.begin() + done + more);
      cuda::reduce_n(dst, group.data(), static_cast<int>(group.size()), len, dt, op, stream_);
      done += more;
    }
    if (avg) cuda::divide(dst, len, dt, n, stream_);
  };
  switch (coll) {
    case Coll::kAllreduce: {  // slice r: reduce here, then push to every peer's output
      Chunks ch{count, n};
      const size_t at = ch.offset(r) * es, len = ch.length(r);
      reduce_into(out + at, at, len);
      for (int p = 0; p < n; ++p)
        if (p != r) cuda::copy_async(outs[p] + at, out + at, len * es, stream_);
      break;
    }
    case Coll::kReduceScatter:
      reduce_into(out, r * count * es, count);
      break;
    case Coll::kAllgather:
      for (int p = 0; p < n; ++p)
        if (p != r || in != out + r * count * es) cuda::copy_async(out + p * count * es, ins[p], count * es, stream_);
      break;
    case Coll::kBroadcast:
      if (r != root) cuda::copy_async(out, ins[root], count * es, stream_);
      break;
    default:
      throw_error(ErrorKind::kValue, std::string("no GPU path for ") + coll_name(coll));
  }
  // 3. Nobody leaves while a peer may still read its input or write its output.
  cuda::stream_sync(stream_);
  ctx.sync_peers();
}

void DeviceState::run_staged(OpContext& ctx, const uint8_t* in, uint8_t* out, size_t count, int root) {
  const size_t n = ctx.size(), es = ctx.elem();
  size_t in_bytes = count * es, out_bytes = count * es;
  if (ctx.stamp.coll == Coll::kReduceScatter) in_bytes *= n;
  if (ctx.stamp.coll == Coll::kAllgather) out_bytes *= n;
  const size_t in_room = (in_bytes + 63) & ~size_t(63);
  if (pinned_bytes_ < in_room + out_bytes) {
    cuda::host_free_pinned(pinned_);
    pinned_ = nullptr;
    pinned_bytes_ = 0;
    pinned_ = static_cast<uint8_t*>(cuda::host_alloc_pinned(in_room + out_bytes));
    pinned_bytes_ = in_room + out_bytes;
  }
  uint8_t *host_in = pinned_, *host_out = pinned_ + in_room;
  cuda::copy_async(host_in, ctx.stamp.coll == Coll::kBroadcast ? out : in, in_bytes, stream_);
  cuda::stream_sync(stream_);
  switch (ctx.stamp.coll) {
    case Coll::kAllreduce: allreduce(ctx, host_in, host_out, count); break;
    case Coll::kReduceScatter: reduce_scatter(ctx, host_in, host_out, count); break;
    case Coll::kAllgather: allgather(ctx, host_in, host_out, count); break;
    case Coll::kBroadcast:
      broadcast(ctx, host_in, count, root);
      host_out = host_in;
      break;
    default:
      throw_error(ErrorKind::kValue, std::string("no GPU path for ") + coll_name(ctx.stamp.coll));
  }
  cuda::copy_async(out, host_out, out_bytes, stream_);
}

}  // namespace pycomm
