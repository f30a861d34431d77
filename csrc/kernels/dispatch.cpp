// Run-time choice of the reduction kernels: the best instruction set this CPU
// (and OS) supports, lowered by PYCOMM_ISA=baseline|avx2|avx512 or set_isa().
// A call costs one table lookup and one indirect call; the environment is
// read once.

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>

#include "reduce.h"
#include "reduce_impl.h"

namespace pycomm {
namespace kernels {
namespace {

const KernelTable* table_for(Isa isa) {
  switch (isa) {
    case Isa::kAvx512: return avx512_table();
    case Isa::kAvx2: return avx2_table();
    case Isa::kBaseline: break;
  }
  return baseline_table();
}

Isa detect_isa() {
  // __builtin_cpu_supports also checks (xgetbv) that the OS saves the
  // YMM/ZMM state, so a feature reported here is usable.
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    __builtin_cpu_supports("f16c");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") &&
                      __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  return avx512 ? Isa::kAvx512 : avx2 ? Isa::kAvx2 : Isa::kBaseline;
}

// The ISA named by PYCOMM_ISA, capped at what the CPU supports; unknown
// names are reported once and ignored.
Isa initial_isa(Isa best) {
  const char* env = std::getenv("PYCOMM_ISA");
  if (env == nullptr || *env == '\0') return best;
  for (Isa isa : {Isa::kBaseline, Isa::kAvx2, Isa::kAvx512}) {
    if (std::strcmp(env, isa_name(isa)) == 0) return isa < best ? isa : best;
  }
  std::fprintf(stderr, "pycomm: ignoring PYCOMM_ISA=%s (expected baseline, avx2 or avx512)\n",
               env);
  return best;
}

// Constant-initialised, so calls made during other files' static
// initialisation find it (null: not chosen yet).
std::atomic<const KernelTable*> g_table{nullptr};
std::atomic<Isa> g_isa{Isa::kBaseline};

const KernelTable* init_table() {
  static const bool done = [] {  // runs once, thread-safe
    const Isa isa = initial_isa(best_supported_isa());
    g_isa.store(isa);
    g_table.store(table_for(isa), std::memory_order_release);
    return true;
  }();
  (void)done;
  return g_table.load(std::memory_order_acquire);
}

inline const KernelTable* table() {
  const KernelTable* t = g_table.load(std::memory_order_acquire);
  return t != nullptr ? t : init_table();
}

}  // namespace

Isa best_supported_isa() {
  static const Isa best = detect_isa();
  return best;
}

Isa active_isa() {
  table();  // make sure the environment has been read
  return g_isa.load();
}

bool set_isa(Isa isa) {
  if (isa < Isa::kBaseline || isa > best_supported_isa()) return false;
  table();  // read the environment first, so it can't override this later
  g_isa.store(isa);
  g_table.store(table_for(isa), std::memory_order_release);
  return true;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kBaseline: return "baseline";
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512: return "avx512";
  }
  return "?";
}

// kAvg reduces as a sum: the division happens once, after the last step.
// Out-of-range dtype/op codes (the Python layer validates them) do nothing.
void reduce(void* dst, const void* a, const void* b, size_t count, DType dtype, RedOp op) {
  const auto t = static_cast<unsigned>(dtype), o = static_cast<unsigned>(op);
  if (count == 0 || t >= kNumDTypes || o >= kNumRedOps) return;
  table()->reduce[t][o](dst, a, b, count);
}

void copy(void* dst, const void* src, size_t bytes) {
  if (bytes) table()->copy(dst, src, bytes);
}

void copy_stream(void* dst, const void* src, size_t bytes) {
  if (bytes) table()->copy_stream(dst, src, bytes);
}

// Integer dtypes are a no-op: callers only ever divide floating types (avg).
void divide(void* dst, size_t count, DType dtype, double divisor) {
  const auto t = static_cast<unsigned>(dtype);
  if (count == 0 || t >= kNumDTypes) return;
  table()->divide[t](dst, count, divisor);
}

}  // namespace kernels
}  // namespace pycomm
