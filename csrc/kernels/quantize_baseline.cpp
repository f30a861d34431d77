// Int8 quantization for any x86-64 (SSE2), the reference the SIMD paths
// match bit for bit.
#include "quantize_impl.h"  // headers first

#pragma GCC push_options
#define PYCOMM_ISA baseline
#define PYCOMM_ISA_LEVEL 0
#include "quantize_impl.h"
#pragma GCC pop_options

namespace pycomm {
namespace kernels {

const QuantTable* quant_baseline_table() { return &baseline::kQuantTable; }

}  // namespace kernels
}  // namespace pycomm
