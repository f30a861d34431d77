// Int8 quantization for AVX-512 F/BW/DQ/VL (Skylake-SP, Ice Lake, Zen 4 and later).
#include "quantize_impl.h"  // headers first, compiled for the default target

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c")
#define PYCOMM_ISA avx512
#define PYCOMM_ISA_LEVEL 2
#include "quantize_impl.h"
#pragma GCC pop_options

namespace pycomm {
namespace kernels {
// Outside the pragma: dispatch calls this on every CPU.
const QuantTable* quant_avx512_table() { return &avx512::kQuantTable; }
}  // namespace kernels
}  // namespace pycomm
