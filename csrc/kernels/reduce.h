// Elementwise reduction kernels, compiled for several instruction sets and
// dispatched at run time (no -march=native: one build runs on any x86-64).
#pragma once

#include <cstddef>

#include "../common/dtype.h"

namespace pycomm {
namespace kernels {

enum class Isa : int { kBaseline = 0, kAvx2 = 1, kAvx512 = 2 };

// dst[i] = a[i] op b[i] for i < count. dst may alias a or b (not partially).
// op is sum, prod, min or max; kAvg is the caller's sum followed by divide().
// Half types (float16, bfloat16) are widened to float32, combined, and rounded
// back to nearest-even once per element.
void reduce(void* dst, const void* a, const void* b, size_t count, DType dtype, RedOp op);

// memcpy for the data path: as fast at every alignment (glibc's is not on AMD Zen).
void copy(void* dst, const void* src, size_t bytes);
// copy() for a large destination nobody reads soon: non-temporal stores, so
// its lines are neither read for ownership first nor kept in the cache
// (alltoall's own block: 16 MiB at 2 ranks 1232 against 1512 us).
void copy_stream(void* dst, const void* src, size_t bytes);

// dst[i] = dst[i] / divisor, floating types only (float32 math for half types).
void divide(void* dst, size_t count, DType dtype, double divisor);

// The instruction set in use: the best this CPU supports, unless PYCOMM_ISA
// (baseline|avx2|avx512) or set_isa() asked for a lower one.
Isa active_isa();
Isa best_supported_isa();
// Returns false (and changes nothing) when the CPU lacks `isa`.
bool set_isa(Isa isa);
const char* isa_name(Isa isa);

}  // namespace kernels
}  // namespace pycomm
