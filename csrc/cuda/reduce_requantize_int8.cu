// The owner's step of the compressed allreduce in one pass (cuda_kernels.h:
// reduce_requantize_int8): dequantize and sum nsrc int8 contributions (one
// of them may be float32 as it is) in float32, divide, add the residual, and
// quantize the result, one group of
// threads per quantization block (quant_block.cuh). Bitwise the CPU's
// dequantize_int8, dequantize_accumulate_int8, float32 division and
// quantize_int8 in that order.
#include <cuda_runtime.h>

#include "common/error.h"
#include "cuda/cuda_kernels.h"
#include "cuda/launch.cuh"
#include "cuda/numeric.cuh"
#include "cuda/quant_block.cuh"
#include "kernels/quantize_int8.h"

namespace pycomm {
namespace cuda {
namespace {

using quant::Group;

// By value in the kernel's parameters, like reduce.cu's Sources.
struct QSources {
  const int8_t* q[kMaxReduceSources];
  const float* s[kMaxReduceSources];
  const float* dense;  // float32 values standing for source dense_index (its q, s unread), or null
  int dense_index;
  int n;
};

// Sources whose loads are issued together before any is summed: enough bytes
// in flight without holding every source in registers. (For 4096-element
// blocks the kernel takes ~124 registers, 2 CUDA blocks an SM; each thread
// then has 16 residuals and 4 x 16 q bytes in flight, which is plenty, and
// capping the registers spills.)
constexpr int kBatch = 4;

// This thread's q bytes of the block at p, 4 to a word. kWhole: one 4-byte
// load per chunk; else byte by byte, 0 past the block's end.
template <int EPT, bool kWhole>
__device__ __forceinline__ void load_q(const int8_t* p, const Group& g, uint32_t (&w)[EPT / 4]) {
#pragma unroll
  for (int c = 0; c < EPT / 4; ++c) {
    const int e = quant::chunk_offset(g, c);
    if constexpr (kWhole) {
      w[c] = *reinterpret_cast<const uint32_t*>(p + e);
    } else {
      w[c] = 0;
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        if (e + k < g.n) w[c] |= uint32_t(uint8_t(p[e + k])) << (8 * k);
      }
    }
  }
}

// acc = dq(source 0) + dq(source 1) + ..., in source order, float32; the
// dense source's values as they are.
template <int EPT, bool kWhole>
__device__ __forceinline__ void dequantize_sum(const QSources& src, const Group& g,
                                               float (&acc)[EPT]) {
  float dense[EPT];
  if (src.dense) quant::load_elems<Plain<float>, EPT, kWhole>(src.dense + g.b0, g, dense);
  for (int r0 = 0; r0 < src.n; r0 += kBatch) {
    uint32_t w[kBatch][EPT / 4];
    float s[kBatch];
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      // Past the last source, load that one again (a cache hit, not used):
      // the loads stay unconditional, so they are all issued together.
      const int r = min(r0 + b, src.n - 1);
      if (src.dense && r == src.dense_index) {
        s[b] = 0.0f;
#pragma unroll
        for (int c = 0; c < EPT / 4; ++c) w[b][c] = 0;
        continue;
      }
      s[b] = g.n > 0 ? src.s[r][g.index] : 0.0f;
      load_q<EPT, kWhole>(src.q[r] + g.b0, g, w[b]);
    }
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      if (r0 + b >= src.n) break;
      const bool is_dense = src.dense && r0 + b == src.dense_index;
#pragma unroll
      for (int j = 0; j < EPT; ++j) {
        const float q = static_cast<float>(int8_t(w[b][j / 4] >> (8 * (j % 4))));
        const float d = is_dense ? dense[j] : __fmul_rn(q, s[b]);
        acc[j] = r0 + b == 0 ? d : __fadd_rn(acc[j], d);
      }
    }
  }
}

template <int EPT>
__global__ void __launch_bounds__(quant::kThreads)
    reduce_requantize_kernel(QSources src, size_t count, int block_size, float divisor,
                             bool stochastic, uint64_t seed, float* residual, int8_t* q_out,
                             float* s_out, bool vec) {
  __shared__ uint32_t warp_max[quant::kThreads / 32];
  const Group g = quant::make_group<EPT>(block_size, count);
  const bool whole = quant::whole_chunks(g, EPT / 4, vec);
  float res[EPT];
  if (residual) quant::load_elems<Plain<float>, EPT>(residual + g.b0, g, whole, res);
  float acc[EPT];
  if (whole) {
    dequantize_sum<EPT, true>(src, g, acc);
  } else {
    dequantize_sum<EPT, false>(src, g, acc);
  }
  uint32_t m = 0;
#pragma unroll
  for (int j = 0; j < EPT; ++j) {
    float v = divisor != 1.0f ? __fdiv_rn(acc[j], divisor) : acc[j];
    if (residual) v = __fadd_rn(v, res[j]);
    // Past the block's end: 0, which leaves the maximum alone (0 * a NaN or
    // Inf scale would not).
    acc[j] = quant::chunk_offset(g, j / 4) + j % 4 < g.n ? v : 0.0f;
    m = max(m, quant::abs_bits(acc[j]));
  }
  m = quant::group_max(m, g, warp_max);
  quant::quantize_store<EPT>(acc, g, m, stochastic, seed, residual, q_out, s_out, vec);
}

}  // namespace

void reduce_requantize_int8(const int8_t* const* q, const float* const* s, int nsrc,
                            size_t count, size_t block_size, float divisor, bool stochastic,
                            uint64_t seed, float* residual, int8_t* q_out, float* s_out,
                            const float* dense, int dense_index, void* stream) {
  if (nsrc < 1 || nsrc > kMaxReduceSources) {
    throw_error(ErrorKind::kValue, strprintf("reduce_requantize_int8: %d sources (1 to %d "
                                             "allowed)", nsrc, kMaxReduceSources));
  }
  if (!kernels::quant_block_size_ok(block_size)) {
    throw_error(ErrorKind::kValue, strprintf("reduce_requantize_int8: block size %zu is not a "
                                             "power of two in [32, 4096]", block_size));
  }
  if (count == 0) return;
  use_device_of(stream, q_out);
  QSources src{};
  bool vec = aligned_to(q_out, 4) && (residual == nullptr || aligned_to(residual, 16));
  if (dense && (dense_index < 0 || dense_index >= nsrc)) {
    throw_error(ErrorKind::kValue, strprintf("reduce_requantize_int8: dense_index %d is not one "
                                             "of the %d sources", dense_index, nsrc));
  }
  for (int r = 0; r < nsrc; ++r) {
    const bool is_dense = dense && r == dense_index;
    src.q[r] = is_dense ? nullptr : q[r];
    src.s[r] = is_dense ? nullptr : s[r];
    vec = vec && (is_dense || aligned_to(q[r], 4));
  }
  src.dense = dense;
  src.dense_index = dense_index;
  vec = vec && (dense == nullptr || aligned_to(dense, 16));
  src.n = nsrc;
  const int ept = quant::elems_per_thread(block_size);
  const size_t groups_per_cta = quant::kThreads / (block_size / ept);
  const unsigned grid = grid_size(kernels::quant_num_blocks(count, block_size), groups_per_cta,
                                  "reduce_requantize_int8");
  const cudaStream_t st = as_stream(stream);
  const int bs = static_cast<int>(block_size);
  switch (ept) {
    case 4:
      reduce_requantize_kernel<4><<<grid, quant::kThreads, 0, st>>>(
          src, count, bs, divisor, stochastic, seed, residual, q_out, s_out, vec);
      break;
    case 8:
      reduce_requantize_kernel<8><<<grid, quant::kThreads, 0, st>>>(
          src, count, bs, divisor, stochastic, seed, residual, q_out, s_out, vec);
      break;
    default:
      reduce_requantize_kernel<16><<<grid, quant::kThreads, 0, st>>>(
          src, count, bs, divisor, stochastic, seed, residual, q_out, s_out, vec);
      break;
  }
  check_launch("reduce_requantize_int8 kernel launch");
}

}  // namespace cuda
}  // namespace pycomm
