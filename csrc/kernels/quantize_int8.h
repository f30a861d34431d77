// Block-wise symmetric int8 quantization (gradient compression), compiled for
// several instruction sets and dispatched at run time like reduce.h: the same
// ISA as kernels::active_isa(), so set_isa()/PYCOMM_ISA steer both. Every path
// is bit-identical, so ranks on different CPUs produce the same bytes.
//
// Per block of `block_size` elements (the last one may be shorter):
//   v      = widen(x) (+ residual, float32 add, with error feedback)
//   scale  = max|v| / 127.0f
//   q      = clamp(rne(v / scale), -127, 127)            (deterministic)
//          = clamp(floor(v / scale + u), -127, 127)      (stochastic; u in
//            [0, 1) from a counter hash of (seed, global element index))
//   residual = v - q * scale                             (error feedback)
// A block holding NaN or +-Inf gets scale = NaN and q = 0, so every element
// dequantizes to NaN, and its residual is reset to 0 (a NaN residual would
// poison the block forever). A block whose scale is 0 (all zeros, or max|v|
// so small that max|v| / 127 underflows) gets q = 0 and residual = v.
#pragma once

#include <cstddef>
#include <cstdint>

#include "../common/dtype.h"

namespace pycomm {
namespace kernels {

// Block sizes are powers of two in [32, 4096]: a block fits a stack buffer
// and the scale count is a shift away.
constexpr size_t kQuantMinBlock = 32;
constexpr size_t kQuantMaxBlock = 4096;
inline bool quant_block_size_ok(size_t b) {
  return b >= kQuantMinBlock && b <= kQuantMaxBlock && (b & (b - 1)) == 0;
}
inline size_t quant_num_blocks(size_t count, size_t block_size) {
  return (count + block_size - 1) / block_size;
}

// x: `count` elements of dtype (float32, float16 or bfloat16; others do
// nothing). q: count int8; scales: quant_num_blocks() float32. residual:
// null, or count float32 read and updated in place (error feedback).
// `stochastic` rounds with the hash of (seed, index): reproducible, unbiased.
// index_base is the counter of element 0 (a part of a tensor draws what the
// whole tensor would).
void quantize_int8(const void* x, DType dtype, size_t count, size_t block_size, bool stochastic,
                   uint64_t seed, float* residual, int8_t* q, float* scales,
                   uint64_t index_base = 0);

// out[i] = q[i] * scales[i / block_size] (float32).
void dequantize_int8(const int8_t* q, const float* scales, size_t count, size_t block_size,
                     float* out);

// The same, narrowed to dtype (float32, float16 or bfloat16; others do
// nothing) with round-to-nearest-even, as numpy's and torch's casts.
void dequantize_int8_as(const int8_t* q, const float* scales, size_t count, size_t block_size,
                        DType dtype, void* out);

// acc[i] += q[i] * scales[i / block_size]: the receive side of a compressed
// reduction, without a float32 temporary (a product, then a sum: no FMA).
void dequantize_accumulate_int8(const int8_t* q, const float* scales, size_t count,
                                size_t block_size, float* acc);

// out[i] = float32(x[i]) (+ residual[i] when residual is not null): a rank's
// own contribution to a compressed reduction, which never travels and so is
// never quantized. dtype float32, float16 or bfloat16 (exact widening).
void widen_to_float32(const void* x, DType dtype, size_t count, const float* residual,
                      float* out);

// acc = dq(src 0) + dq(src 1) + ... (float32, in source order), where source
// dense_index, if dense is not null, is those float32 values as they are
// (its q and scales are not read): the sum a compressed reduction's owner
// forms. acc must not overlap dense.
void sum_int8_sources(const int8_t* const* q, const float* const* scales, size_t nsrc,
                      size_t count, size_t block_size, const float* dense, size_t dense_index,
                      float* acc);

// The owner's step of a compressed reduction, fused: per element
//   acc = dq(src 0) + dq(src 1) + ... (float32, in source order)
//   acc = acc / divisor                     (only when divisor != 1)
// then quantize_int8(acc) as float32 input, with residual/stochastic/seed as
// there (index = element index within this call). q[s] / scales[s] are
// source s's int8 values and block scales for the same `count` elements.
// The float32 sum never leaves registers and L1: it is formed, quantized and
// (dequant_out) dequantized one group of blocks at a time, in one pass. The
// CUDA kernel of the same name matches it bit for bit.
//
// dense (optional): source `dense_index` is these float32 values, taken as
// they are (q and scales of that index are not read): the owner's own
// contribution, which never travels and so is never quantized.
// dequant_out (optional): also writes dequantize(q_out, scales_out) there.
// It may be dense itself (each group is read before it is written).
void reduce_requantize_int8(const int8_t* const* q, const float* const* scales, size_t nsrc,
                            size_t count, size_t block_size, float divisor, bool stochastic,
                            uint64_t seed, float* residual, int8_t* q_out, float* scales_out,
                            const float* dense = nullptr, size_t dense_index = 0,
                            float* dequant_out = nullptr);

}  // namespace kernels
}  // namespace pycomm
