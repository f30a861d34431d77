// Elementwise reductions of device buffers (cuda_kernels.h: reduce,
// reduce_n, divide), bitwise the CPU's kernels::reduce / divide.
//
// One kernel folds 1..16 sources: reduce() is its two-source case, so the two
// can never drift apart. Each thread owns kUnroll 16-byte chunks strided by
// the block width (coalesced), and issues the loads of the first two sources
// before it combines anything, so enough bytes are in flight to keep HBM busy.
#include <cuda_runtime.h>

#include <cmath>
#include <limits>
#include <type_traits>

#include "cuda/cuda_kernels.h"
#include "cuda/launch.cuh"
#include "cuda/numeric.cuh"

namespace pycomm {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kUnroll = 4;

// The sources, by value in the kernel's parameters: no device-side pointer
// array to allocate, copy or free.
struct Sources {
  const void* p[kMaxReduceSources];
  int n;
};

template <class S> constexpr int kPerChunk = 16 / sizeof(S);

template <class S> union Chunk {
  uint4 raw;
  S e[kPerChunk<S>];
};

__device__ __forceinline__ size_t chunk_index(int u) {
  return (size_t(blockIdx.x) * kUnroll + u) * kThreads + threadIdx.x;
}

template <class S> __device__ __forceinline__ Chunk<S> load(const void* p, size_t chunk) {
  Chunk<S> c;
  c.raw = static_cast<const uint4*>(p)[chunk];
  return c;
}

// Where the result goes: one buffer, or several (a rank's slice of an
// allreduce written into every rank's output at once).
struct Targets {
  void* p[kMaxReduceSources];
  int n;
};

// The divisor type of divide(): double for float64, float for the rest.
template <class E>
using DivisorOf = std::conditional_t<std::is_same_v<typename E::Compute, double>, double, float>;

// The result as stored: narrowed, then (avg) divided as divide() would
// divide the stored sum, so the fused path is bitwise reduce + divide.
template <class E>
__device__ __forceinline__ typename E::Storage finish(typename E::Compute acc, DivisorOf<E> divisor,
                                                      bool divide) {
  typename E::Storage x = E::narrow(acc);
  if constexpr (std::is_floating_point_v<typename E::Compute>) {
    if (divide) x = E::narrow(canonical(op_div(E::widen(x), divisor)));
  }
  return x;
}

template <class E, Op kOp>
__global__ void __launch_bounds__(kThreads)
    reduce_kernel(Targets dst, Sources src, size_t count, bool vector_ok, DivisorOf<E> divisor,
                  bool divide) {
  using S = typename E::Storage;
  using C = typename E::Compute;
  constexpr int N = kPerChunk<S>;
  if (vector_ok && (chunk_index(kUnroll - 1) + 1) * N <= count) {
    // Whole chunks: 16-byte loads and stores.
    Chunk<S> a[kUnroll], b[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) a[u] = load<S>(src.p[0], chunk_index(u));
    if (src.n > 1) {
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) b[u] = load<S>(src.p[1], chunk_index(u));
    }
    C acc[kUnroll][N];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
#pragma unroll
      for (int k = 0; k < N; ++k) {
        acc[u][k] = E::widen(a[u].e[k]);
        if (src.n > 1) acc[u][k] = apply<kOp>(acc[u][k], E::widen(b[u].e[k]));
      }
    }
    for (int r = 2; r < src.n; ++r) {
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) b[u] = load<S>(src.p[r], chunk_index(u));
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
#pragma unroll
        for (int k = 0; k < N; ++k) acc[u][k] = apply<kOp>(acc[u][k], E::widen(b[u].e[k]));
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
#pragma unroll
      for (int k = 0; k < N; ++k) a[u].e[k] = finish<E>(acc[u][k], divisor, divide);
    }
    // Every load is done before the first store: a target may be a source.
    for (int d = 0; d < dst.n; ++d) {
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) static_cast<uint4*>(dst.p[d])[chunk_index(u)] = a[u].raw;
    }
    return;
  }
  // The tail, or pointers not 16-byte aligned: element by element.
  for (int u = 0; u < kUnroll; ++u) {
    const size_t i0 = chunk_index(u) * N;
    for (int k = 0; k < N && i0 + k < count; ++k) {
      const size_t i = i0 + k;
      C acc = E::widen(static_cast<const S*>(src.p[0])[i]);
      for (int r = 1; r < src.n; ++r) {
        acc = apply<kOp>(acc, E::widen(static_cast<const S*>(src.p[r])[i]));
      }
      const S x = finish<E>(acc, divisor, divide);
      for (int d = 0; d < dst.n; ++d) static_cast<S*>(dst.p[d])[i] = x;
    }
  }
}

template <class E, Op kOp>
void launch_reduce(const Targets& dst, const Sources& src, size_t count, double divisor,
                   bool divide, cudaStream_t stream) {
  constexpr int N = kPerChunk<typename E::Storage>;
  bool vector_ok = true;
  for (int d = 0; d < dst.n; ++d) vector_ok = vector_ok && aligned_to(dst.p[d], 16);
  for (int r = 0; r < src.n; ++r) vector_ok = vector_ok && aligned_to(src.p[r], 16);
  const size_t chunks = (count + N - 1) / N;
  const unsigned grid = grid_size(chunks, size_t(kThreads) * kUnroll, "reduce");
  reduce_kernel<E, kOp><<<grid, kThreads, 0, stream>>>(
      dst, src, count, vector_ok, static_cast<DivisorOf<E>>(divisor), divide);
  check_launch("reduce kernel launch");
}

// divide: kAvg's division of the stored sum (never for the other ops).
template <class E>
void reduce_as(RedOp op, const Targets& dst, const Sources& src, size_t count, double divisor,
               cudaStream_t stream) {
  const bool divide = op == RedOp::kAvg && !std::isnan(divisor);
  switch (op) {
    case RedOp::kSum:
    case RedOp::kAvg:
      return launch_reduce<E, Op::kSum>(dst, src, count, divisor, divide, stream);
    case RedOp::kProd: return launch_reduce<E, Op::kProd>(dst, src, count, divisor, false, stream);
    case RedOp::kMin: return launch_reduce<E, Op::kMin>(dst, src, count, divisor, false, stream);
    case RedOp::kMax: return launch_reduce<E, Op::kMax>(dst, src, count, divisor, false, stream);
  }
  throw_error(ErrorKind::kValue, "reduce: invalid op");
}

void reduce_any(DType dtype, RedOp op, const Targets& dst, const Sources& src, size_t count,
                double divisor, void* stream) {
  if (count == 0) return;
  use_device_of(stream, dst.p[0]);
  const cudaStream_t s = as_stream(stream);
  switch (dtype) {
    case DType::kFloat32: return reduce_as<Plain<float>>(op, dst, src, count, divisor, s);
    case DType::kFloat64: return reduce_as<Plain<double>>(op, dst, src, count, divisor, s);
    case DType::kFloat16: return reduce_as<F16>(op, dst, src, count, divisor, s);
    case DType::kBFloat16: return reduce_as<BF16>(op, dst, src, count, divisor, s);
    case DType::kInt8: return reduce_as<Plain<int8_t>>(op, dst, src, count, divisor, s);
    case DType::kUInt8: return reduce_as<Plain<uint8_t>>(op, dst, src, count, divisor, s);
    case DType::kInt32: return reduce_as<Plain<int32_t>>(op, dst, src, count, divisor, s);
    case DType::kInt64: return reduce_as<Plain<int64_t>>(op, dst, src, count, divisor, s);
  }
  throw_error(ErrorKind::kValue, "reduce: invalid dtype");
}

// ---- divide ---------------------------------------------------------------------

template <class E, class D>
__global__ void __launch_bounds__(kThreads)
    divide_kernel(void* dst, size_t count, D divisor, bool vector_ok) {
  using S = typename E::Storage;
  constexpr int N = kPerChunk<S>;
  if (vector_ok && (chunk_index(kUnroll - 1) + 1) * N <= count) {
    Chunk<S> c[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) c[u] = load<S>(dst, chunk_index(u));
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
#pragma unroll
      for (int k = 0; k < N; ++k) {
        c[u].e[k] = E::narrow(canonical(op_div(E::widen(c[u].e[k]), divisor)));
      }
      static_cast<uint4*>(dst)[chunk_index(u)] = c[u].raw;
    }
    return;
  }
  for (int u = 0; u < kUnroll; ++u) {
    const size_t i0 = chunk_index(u) * N;
    for (int k = 0; k < N && i0 + k < count; ++k) {
      S& x = static_cast<S*>(dst)[i0 + k];
      x = E::narrow(canonical(op_div(E::widen(x), divisor)));
    }
  }
}

template <class E, class D> void launch_divide(void* dst, size_t count, D divisor, void* stream) {
  constexpr int N = kPerChunk<typename E::Storage>;
  const unsigned grid = grid_size((count + N - 1) / N, size_t(kThreads) * kUnroll, "divide");
  divide_kernel<E, D><<<grid, kThreads, 0, as_stream(stream)>>>(dst, count, divisor,
                                                                aligned_to(dst, 16));
  check_launch("divide kernel launch");
}

// NaN divisor: avg reduces as sum and the caller divides (reduce, reduce_n).
constexpr double kNoDivide = std::numeric_limits<double>::quiet_NaN();

Targets one_target(void* dst) {
  Targets t{};
  t.p[0] = dst;
  t.n = 1;
  return t;
}

Sources sources(const void* const* srcs, int nsrc) {
  if (nsrc < 1 || nsrc > kMaxReduceSources) {
    throw_error(ErrorKind::kValue,
                strprintf("reduce_n: %d sources (1 to %d allowed)", nsrc, kMaxReduceSources));
  }
  Sources src{};
  for (int r = 0; r < nsrc; ++r) src.p[r] = srcs[r];
  src.n = nsrc;
  return src;
}

}  // namespace

void reduce(void* dst, const void* a, const void* b, size_t count, DType dtype, RedOp op,
            void* stream) {
  const void* ab[] = {a, b};
  reduce_any(dtype, op, one_target(dst), sources(ab, 2), count, kNoDivide, stream);
}

void reduce_n(void* dst, const void* const* srcs, int nsrc, size_t count, DType dtype, RedOp op,
              void* stream) {
  reduce_any(dtype, op, one_target(dst), sources(srcs, nsrc), count, kNoDivide, stream);
}

void reduce_n_to(void* const* dsts, int ndst, const void* const* srcs, int nsrc, size_t count,
                 DType dtype, RedOp op, double divisor, void* stream) {
  if (ndst < 1 || ndst > kMaxReduceSources) {
    throw_error(ErrorKind::kValue,
                strprintf("reduce_n_to: %d targets (1 to %d allowed)", ndst, kMaxReduceSources));
  }
  Targets dst{};
  for (int d = 0; d < ndst; ++d) dst.p[d] = dsts[d];
  dst.n = ndst;
  reduce_any(dtype, op, dst, sources(srcs, nsrc), count, divisor, stream);
}

// The CPU divides float32 (and half types, widened) by float(divisor), and
// float64 by divisor itself: the same here. The quotient is IEEE-rounded
// (nvcc's default -prec-div=true; no fast-math), NaNs canonical.
void divide(void* dst, size_t count, DType dtype, double divisor, void* stream) {
  if (count == 0) return;
  use_device_of(stream, dst);
  const float f = static_cast<float>(divisor);
  switch (dtype) {
    case DType::kFloat32: return launch_divide<Plain<float>>(dst, count, f, stream);
    case DType::kFloat64: return launch_divide<Plain<double>>(dst, count, divisor, stream);
    case DType::kFloat16: return launch_divide<F16>(dst, count, f, stream);
    case DType::kBFloat16: return launch_divide<BF16>(dst, count, f, stream);
    default: return;  // integer averages are not defined (as kernels::divide)
  }
}

}  // namespace cuda
}  // namespace pycomm
