// What every launcher does around its kernel: pick the stream's device, size
// the grid, check that the launch was accepted.
#pragma once

#include <cuda_runtime.h>

#include <climits>
#include <cstddef>
#include <cstdint>

#include "common/error.h"
#include "cuda/runtime.h"

namespace pycomm {
namespace cuda {

inline bool aligned_to(const void* p, size_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

inline cudaStream_t as_stream(void* s) { return static_cast<cudaStream_t>(s); }

// Blocks needed for `items` at `per_block` each; CommError past CUDA's limit.
inline unsigned grid_size(size_t items, size_t per_block, const char* kernel) {
  const size_t blocks = (items + per_block - 1) / per_block;
  if (blocks > static_cast<size_t>(INT_MAX)) {
    throw_error(ErrorKind::kValue, strprintf("%s: %zu elements is too many for one launch",
                                             kernel, items));
  }
  return static_cast<unsigned>(blocks);
}

// Call right after a <<<...>>> launch.
inline void check_launch(const char* kernel) { check(cudaGetLastError(), kernel); }

}  // namespace cuda
}  // namespace pycomm
