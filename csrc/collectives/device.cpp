// Collectives on GPU buffers: CUDA IPC staging on one host, pinned host
// staging across hosts (device.h).
#include "device.h"

#include <algorithm>
#include <cstring>

#include "collectives.h"
#include "../common/error.h"
#include "../cuda/cuda_kernels.h"
#include "../cuda/device_memory.h"

namespace pycomm {
namespace {

// What a rank tells its peers when the GPU path starts.
struct PeerInfo {
  cuda::IpcHandle staging;
  int32_t device;
  int32_t pad;
};

size_t rounds_for(size_t count, size_t per_round) {
  return std::max<size_t>(1, (count + per_round - 1) / per_round);
}

}  // namespace

DeviceState::~DeviceState() {
  for (size_t p = 0; p < peer_staging_.size(); ++p)
    if (peer_staging_[p] != staging_) cuda::ipc_close(peer_staging_[p]);
  cuda::device_free(staging_);
  cuda::host_free_pinned(pinned_);
  cuda::stream_destroy(stream_);
}

std::string DeviceState::describe() const {
  if (device_ < 0) return "GPU path not started";
  if (single_host_)
    return strprintf("CUDA IPC staging (%zu MiB per region) among %zu local ranks, device %d",
                     staging_bytes_ >> 20, peer_staging_.size(), device_);
  return strprintf("pinned host staging over the host transport, device %d", device_);
}

void DeviceState::setup(OpContext& ctx, int device) {
  device_ = device;
  stream_ = cuda::stream_create(device);
  if (!single_host_) return;
  const int n = ctx.size(), r = ctx.rank();
  staging_ = static_cast<uint8_t*>(cuda::device_alloc(2 * staging_bytes_, device));
  PeerInfo mine{};
  mine.staging = cuda::ipc_handle(staging_);
  mine.device = device;
  std::vector<PeerInfo> theirs(n);
  std::vector<SendSpec> sends;
  std::vector<RecvSpec> recvs;
  for (int p = 0; p < n; ++p) {
    if (p == r) continue;
    sends.push_back({p, reinterpret_cast<const uint8_t*>(&mine), sizeof(mine)});
    recvs.push_back({p, sizeof(PeerInfo), Sink{reinterpret_cast<uint8_t*>(&theirs[p])}});
  }
  ctx.exchange(sends.data(), sends.size(), recvs.data(), recvs.size());
  peer_staging_.assign(n, nullptr);
  for (int p = 0; p < n; ++p)
    peer_staging_[p] = p == r ? staging_ : static_cast<uint8_t*>(cuda::ipc_open(theirs[p].staging, device));
}

void DeviceState::run(OpContext& ctx, const void* in, void* out, size_t count, int root,
                      void* caller_stream) {
  const void* any = out ? out : in;
  const int device = cuda::device_of(any);
  if (device < 0) throw_error(ErrorKind::kValue, "the buffer is not in GPU memory");
  if (device_ < 0) {
    setup(ctx, device);
  } else if (device != device_) {
    throw_error(ErrorKind::kValue,
                strprintf("this communicator's GPU buffers live on device %d, this one on device %d "
                          "(one communicator per GPU, as with NCCL)", device_, device));
  }
  cuda::stream_wait(stream_, caller_stream);
  auto* i = static_cast<const uint8_t*>(in);
  auto* o = static_cast<uint8_t*>(out);
  if (single_host_) {
    run_ipc(ctx, i, o, count, root);
  } else {
    run_staged(ctx, i, o, count, root);
  }
  cuda::stream_sync(stream_);
}

// Every round ends with all ranks' streams drained and a meeting, so the next
// round (or op) may overwrite any staging region.
void DeviceState::run_ipc(OpContext& ctx, const uint8_t* in, uint8_t* out, size_t count, int root) {
  const int n = ctx.size(), r = ctx.rank();
  const size_t es = ctx.elem(), region = staging_bytes_;
  const DType dt = ctx.stamp.dtype;
  const bool avg = ctx.stamp.op == RedOp::kAvg;
  const RedOp op = avg ? RedOp::kSum : ctx.stamp.op;
  auto in_of = [&](int p) { return peer_staging_[p]; };
  auto out_of = [&](int p) { return peer_staging_[p] + region; };
  std::vector<const void*> srcs(n);
  auto meet = [&] {
    cuda::stream_sync(stream_);
    ctx.sync_peers();
  };
  // Every rank's slice, reduced in rank order (kMaxReduceSources per launch,
  // each later launch folding dst in first).
  auto reduce_into = [&](uint8_t* dst, size_t src_offset, size_t len) {
    if (len == 0) return;
    for (int p = 0; p < n; ++p) srcs[p] = in_of(p) + src_offset;
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

  switch (ctx.stamp.coll) {
    case Coll::kAllreduce: {
      const size_t per = std::max<size_t>(1, region / es);
      for (size_t k = 0, rounds = rounds_for(count, per); k < rounds; ++k) {
        const size_t a = k * per, len = std::min(per, count - std::min(count, a));
        cuda::copy_async(in_of(r), in + a * es, len * es, stream_);
        meet();
        Chunks ch{len, n};
        reduce_into(out_of(r) + ch.offset(r) * es, ch.offset(r) * es, ch.length(r));
        meet();
        for (int p = 0; p < n; ++p)
          cuda::copy_async(out + (a + ch.offset(p)) * es, out_of(p) + ch.offset(p) * es,
                           ch.length(p) * es, stream_);
        meet();
      }
      break;
    }
    case Coll::kReduceScatter: {  // in: n blocks of count; out: block r
      const size_t per = std::max<size_t>(1, region / es / n);
      for (size_t k = 0, rounds = rounds_for(count, per); k < rounds; ++k) {
        const size_t a = k * per, len = std::min(per, count - std::min(count, a));
        for (int j = 0; j < n; ++j)
          cuda::copy_async(in_of(r) + j * len * es, in + (j * count + a) * es, len * es, stream_);
        meet();
        reduce_into(out + a * es, r * len * es, len);
        meet();
      }
      break;
    }
    case Coll::kAllgather: {  // in: count; out: n blocks of count
      const size_t per = std::max<size_t>(1, region / es);
      for (size_t k = 0, rounds = rounds_for(count, per); k < rounds; ++k) {
        const size_t a = k * per, len = std::min(per, count - std::min(count, a));
        cuda::copy_async(in_of(r), in + a * es, len * es, stream_);
        meet();
        for (int p = 0; p < n; ++p)
          cuda::copy_async(out + (p * count + a) * es, in_of(p), len * es, stream_);
        meet();
      }
      break;
    }
    case Coll::kBroadcast: {  // in == out
      const size_t per = std::max<size_t>(1, region / es);
      for (size_t k = 0, rounds = rounds_for(count, per); k < rounds; ++k) {
        const size_t a = k * per, len = std::min(per, count - std::min(count, a));
        if (r == root) cuda::copy_async(in_of(r), out + a * es, len * es, stream_);
        meet();
        if (r != root) cuda::copy_async(out + a * es, in_of(root), len * es, stream_);
        meet();
      }
      break;
    }
    default:
      throw_error(ErrorKind::kValue, std::string("no GPU path for ") + coll_name(ctx.stamp.coll));
  }
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
