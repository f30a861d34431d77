// The seeds of the int8 collectives' stochastic rounding, derived one way
// on every path (host, GPU buffers on one host, GPU buffers staged). Ranks
// must not draw the same numbers (their errors would add up instead of
// averaging out), nor may an owner's second rounding draw its first's.
#pragma once

#include <cstddef>
#include <cstdint>

namespace pycomm {

// splitmix64's finalizer over a ^ b * golden ratio.
inline uint64_t int8_mix(uint64_t a, uint64_t b) {
  uint64_t z = a ^ (b * 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Rank `rank`'s rounding of its own contribution (the whole input; the
// kernels draw by element index).
inline uint64_t int8_worker_seed(uint64_t seed, int rank) { return int8_mix(seed, 1 + static_cast<uint64_t>(rank)); }

// The owner's rounding of the sum of the elements starting at `first`.
inline uint64_t int8_owner_seed(uint64_t seed, size_t first) {
  constexpr uint64_t kOwnerStream = 0x6f776e6572ull;  // "owner"
  return int8_mix(seed ^ kOwnerStream, first);
}

}  // namespace pycomm
