// How the int8 collectives lay out a run of quantized elements, in scratch
// and on the wire: [float32 scale per block | int8 values], one message.
#pragma once

#include <cstddef>
#include <cstdint>

#include "../kernels/quantize_int8.h"

namespace pycomm {

inline size_t align64(size_t n) { return (n + 63) & ~size_t(63); }

struct Int8Packed {
  uint8_t* base;
  size_t count, block_size;
  size_t blocks() const { return kernels::quant_num_blocks(count, block_size); }
  size_t bytes() const { return count ? blocks() * sizeof(float) + count : 0; }
  float* scales() const { return reinterpret_cast<float*>(base); }
  int8_t* q() const { return reinterpret_cast<int8_t*>(base + blocks() * sizeof(float)); }
};

}  // namespace pycomm
