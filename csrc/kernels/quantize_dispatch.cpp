// Run-time dispatch of the int8 kernels: follows the reduction kernels'
// choice (active_isa(): PYCOMM_ISA, set_isa()).
#include "quantize_impl.h"
#include "reduce.h"  // active_isa()

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

void dequantize_int8_as(const int8_t* q, const float* scales, size_t count, size_t block_size,
                        DType dtype, void* out) {
  const int o = input_index(dtype);
  if (count == 0 || o < 0 || !quant_block_size_ok(block_size)) return;
  quant_table()->dequant_as[o](q, scales, count, block_size, out);
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
  quant_table()->sum(Int8Sources{q, scales, nsrc, dense, dense_index}, count, block_size, acc);
}

void reduce_requantize_int8(const int8_t* const* q, const float* const* scales, size_t nsrc,
                            size_t count, size_t block_size, float divisor, bool stochastic,
                            uint64_t seed, float* residual, int8_t* q_out, float* scales_out,
                            const float* dense, size_t dense_index, float* dequant_out) {
  if (count == 0 || nsrc == 0 || !quant_block_size_ok(block_size)) return;
  quant_table()->reduce_requant[residual != nullptr][stochastic][dequant_out != nullptr](
      Int8Sources{q, scales, nsrc, dense, dense_index}, count, block_size, divisor, seed, residual,
      q_out, scales_out, dequant_out);
}

}  // namespace kernels
}  // namespace pycomm
