// Kernels for any x86-64 (SSE2): the fallback path, and the reference the
// SIMD paths must match bit for bit.
#include "reduce_impl.h"

#define PYCOMM_ISA baseline
#define PYCOMM_ISA_LEVEL 0
#include "reduce_impl.h"

namespace pycomm {
namespace kernels {
const KernelTable* baseline_table() { return &baseline::kTable; }
}  // namespace kernels
}  // namespace pycomm
