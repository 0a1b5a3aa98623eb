#include "cpu/simd.h"

#include <cstdlib>
#include <string>

namespace diffuse {
namespace simd {
namespace {

Isa hardware_isa() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"))
    return Isa::avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::avx2;
#endif
  return Isa::generic;
}

}  // namespace

Isa cpu_isa() {
  Isa isa = hardware_isa();
  if (const char* cap = std::getenv("DIFFUSE_CPU_ISA")) {
    const std::string c = cap;
    const Isa limit = c == "generic" ? Isa::generic : c == "avx2" ? Isa::avx2 : Isa::avx512;
    if (limit < isa) isa = limit;
  }
  return isa;
}

}  // namespace simd
}  // namespace diffuse
