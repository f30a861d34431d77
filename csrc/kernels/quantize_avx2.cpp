// Int8 quantization for AVX2 + FMA + F16C (Haswell, Zen 1 and later).
#include "quantize_impl.h"  // headers first, compiled for the default target

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#define PYCOMM_ISA avx2
#define PYCOMM_ISA_LEVEL 1
#include "quantize_impl.h"
#pragma GCC pop_options

namespace pycomm {
namespace kernels {
// Outside the pragma: dispatch calls this on every CPU.
const QuantTable* quant_avx2_table() { return &avx2::kQuantTable; }
}  // namespace kernels
}  // namespace pycomm
