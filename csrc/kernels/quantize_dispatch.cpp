// Run-time dispatch of the int8 kernels: follows the reduction kernels'
// choice (active_isa(): PYCOMM_ISA, set_isa()).
#include <algorithm>
#include <vector>

#include "quantize_impl.h"
#include "reduce.h"

namespace pycomm {
namespace kernels {

namespace {

const QuantTable* quant_table() {
  switch (active_isa()) {
    case Isa::kAvx512: return quant_avx512_table();
    case Isa::kAvx2: return quant_avx2_table();
    case Isa::kBaseline: break;
  }
  return quant_baseline_table();
}

int input_index(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return 0;
    case DType::kFloat16: return 1;
    case DType::kBFloat16: return 2;
    default: return -1;
  }
}

}  // namespace

// Invalid block sizes or input dtypes do nothing (the binding validates them).
void quantize_int8(const void* x, DType dtype, size_t count, size_t block_size, bool stochastic,
                   uint64_t seed, float* residual, int8_t* q, float* scales,
                   uint64_t index_base) {
  const int in = input_index(dtype);
  if (count == 0 || in < 0 || !quant_block_size_ok(block_size)) return;
  quant_table()->quant[in][residual != nullptr][stochastic](x, count, block_size, seed, index_base,
                                                            residual, q, scales);
}

void dequantize_int8(const int8_t* q, const float* scales, size_t count, size_t block_size,
                     float* out) {
  if (count == 0 || !quant_block_size_ok(block_size)) return;
  quant_table()->dequant[0](q, scales, count, block_size, out);
}

void dequantize_accumulate_int8(const int8_t* q, const float* scales, size_t count,
                                size_t block_size, float* acc) {
  if (count == 0 || !quant_block_size_ok(block_size)) return;
  quant_table()->dequant[1](q, scales, count, block_size, acc);
}

void widen_to_float32(const void* x, DType dtype, size_t count, const float* residual,
                      float* out) {
  const int in = input_index(dtype);
  if (count == 0 || in < 0) return;
  quant_table()->widen[in][residual != nullptr](x, count, residual, out);
}

void sum_int8_sources(const int8_t* const* q, const float* const* scales, size_t nsrc,
                      size_t count, size_t block_size, const float* dense, size_t dense_index,
                      float* acc) {
  if (count == 0 || nsrc == 0 || !quant_block_size_ok(block_size)) return;
  const QuantTable* t = quant_table();
  for (size_t s = 0; s < nsrc; ++s) {
    if (dense && s == dense_index) {
      if (s == 0) {
        copy(acc, dense, count * sizeof(float));
      } else {
        reduce(acc, acc, dense, count, DType::kFloat32, RedOp::kSum);
      }
    } else {
      t->dequant[s != 0](q[s], scales[s], count, block_size, acc);
    }
  }
}

void reduce_requantize_int8(const int8_t* const* q, const float* const* scales, size_t nsrc,
                            size_t count, size_t block_size, float divisor, bool stochastic,
                            uint64_t seed, float* residual, int8_t* q_out, float* scales_out,
                            const float* dense, size_t dense_index, float* dequant_out) {
  if (count == 0 || nsrc == 0 || !quant_block_size_ok(block_size)) return;
  const QuantTable* t = quant_table();
  const QuantFn quant = t->quant[0][residual != nullptr][stochastic];
  // A stretch of whole blocks (kQuantMaxBlock is a multiple of every block
  // size), small enough to stay in L1 between the passes.
  alignas(64) float acc[kQuantMaxBlock];
  std::vector<const int8_t*> qs(nsrc);
  std::vector<const float*> ss(nsrc);
  for (size_t i = 0; i < count; i += kQuantMaxBlock) {
    const size_t n = std::min(kQuantMaxBlock, count - i), blk = i / block_size;
    for (size_t s = 0; s < nsrc; ++s) {  // the dense source's pointers may be null
      qs[s] = q[s] ? q[s] + i : nullptr;
      ss[s] = scales[s] ? scales[s] + blk : nullptr;
    }
    sum_int8_sources(qs.data(), ss.data(), nsrc, n, block_size, dense ? dense + i : nullptr,
                     dense_index, acc);
    if (divisor != 1.0f) {
      for (size_t j = 0; j < n; ++j) acc[j] = acc[j] / divisor;
    }
    quant(acc, n, block_size, seed, i, residual ? residual + i : nullptr, q_out + i,
          scales_out + blk);
    if (dequant_out) t->dequant[0](q_out + i, scales_out + blk, n, block_size, dequant_out + i);
  }
}

}  // namespace kernels
}  // namespace pycomm
