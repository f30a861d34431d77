// The CUDA kernels' host-side launchers: plain C++ (no CUDA headers), so any
// C++ file can call them; their definitions exist only when pycomm is built
// with CUDA (PYCOMM_WITH_CUDA). All pointers are device pointers.
//
// Every launcher is asynchronous: it enqueues on `stream` (a cudaStream_t;
// nullptr is the legacy default stream) on the device that owns that stream
// (runtime.h: use_device_of), and returns. A launch failure throws CommError
// naming the kernel and the CUDA error; faults inside a kernel surface at the
// caller's next synchronisation, as with any CUDA work.
//
// Results are bitwise those of the CPU kernels (csrc/kernels/) for the same
// input, NaN bit patterns included, so a rank that reduces on its GPU and one
// that reduces on its CPU agree. Exceptions are stated per function.
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/dtype.h"

namespace pycomm {
namespace cuda {

// reduce_n takes at most this many sources in one call.
constexpr int kMaxReduceSources = 16;

// dst[i] = a[i] op b[i], as kernels::reduce: any DType; op sum, prod, min,
// max (avg reduces as sum: the caller divides). dst may be a or b (exactly,
// not a shifted overlap).
void reduce(void* dst, const void* a, const void* b, size_t count, DType dtype, RedOp op,
            void* stream);

// dst[i] = srcs[0][i] op srcs[1][i] op ... op srcs[nsrc-1][i], folded left in
// source order, for 1 <= nsrc <= kMaxReduceSources. Half types accumulate in
// float32 and round once at the end (so for nsrc > 2 this is more accurate
// than, and not bitwise equal to, a chain of reduce() calls; for nsrc <= 2 it
// is bitwise reduce()). dst may be one of the sources.
void reduce_n(void* dst, const void* const* srcs, int nsrc, size_t count, DType dtype, RedOp op,
              void* stream);

// reduce_n written to every one of dsts[0..ndst-1] (1 <= ndst <=
// kMaxReduceSources) in the same pass: how an allreduce rank writes its
// reduced slice into every rank's output. op kAvg sums, then divides each
// stored result by `divisor` as divide() would (bitwise reduce_n + divide).
// A target may be a source (exactly), never a shifted overlap.
void reduce_n_to(void* const* dsts, int ndst, const void* const* srcs, int nsrc, size_t count,
                 DType dtype, RedOp op, double divisor, void* stream);

// dst[i] = dst[i] / divisor, as kernels::divide: floating dtypes (float32
// math for half types); integer dtypes are left alone.
void divide(void* dst, size_t count, DType dtype, double divisor, void* stream);

// Block-wise int8 quantization, as kernels::quantize_int8 (quantize_int8.h):
// same bytes, scales and residual bits. dtype float32, float16 or bfloat16;
// block_size a power of two in [32, 4096]; the stochastic hash's index is the
// element's index within this call.
void quantize_int8(const void* x, DType dtype, size_t count, size_t block_size, bool stochastic,
                   uint64_t seed, float* residual, int8_t* q, float* scales, void* stream);

// out[i] = q[i] * scales[i / block_size].
void dequantize_int8(const int8_t* q, const float* scales, size_t count, size_t block_size,
                     float* out, void* stream);

// acc[i] = acc[i] + q[i] * scales[i / block_size] (a product, then a sum).
void dequantize_accumulate_int8(const int8_t* q, const float* scales, size_t count,
                                size_t block_size, float* acc, void* stream);

// The owner's step of the compressed allreduce, in one pass over memory:
//   acc = dequantize(q[0], s[0]); acc = acc + dequantize(q[r], s[r]) for r = 1..nsrc-1;
//   acc = acc / divisor (unless divisor == 1);
//   quantize acc (float32) into q_out, s_out as quantize_int8 would, with
//   `residual` (or none), stochastic rounding and seed.
// dense (or null): float32 values standing for source dense_index, taken as
// they are (q[dense_index], s[dense_index] are not read): the owner's own
// contribution. Bitwise the CPU's kernels::reduce_requantize_int8.
// 1 <= nsrc <= kMaxReduceSources.
void reduce_requantize_int8(const int8_t* const* q, const float* const* s, int nsrc,
                            size_t count, size_t block_size, float divisor, bool stochastic,
                            uint64_t seed, float* residual, int8_t* q_out, float* s_out,
                            const float* dense, int dense_index, void* stream);

// out[i] = float32(x[i]) (+ residual[i] when not null), as
// kernels::widen_to_float32 (bitwise but for NaN payloads, which only ever
// turn their block NaN): dtype float32, float16 or bfloat16.
void widen_to_float32(const void* x, DType dtype, size_t count, const float* residual,
                      float* out, void* stream);

}  // namespace cuda
}  // namespace pycomm
