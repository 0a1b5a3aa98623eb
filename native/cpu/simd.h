// Portable SIMD for the CPU kernels, written once and compiled per instruction set.
//
// vf<W> is a W-lane float vector (GCC / Clang vector extensions). A kernel body is a template on
// W over these vectors, always inlined, and DIFFUSE_SIMD_CLONES stamps out one copy per
// instruction set at its natural width, one register per vector: AVX-512 with W = 16, AVX2 with
// W = 8, and the baseline (SSE2 on x86-64, NEON elsewhere) with W = 4, plus a dispatcher that
// picks the best the processor supports. DIFFUSE_CPU_ISA=avx2 or generic caps the choice, to
// test the other copies and to compare them.
//
// exp() is a Cephes-style polynomial (Cody-Waite range reduction, degree-6 minimax), within
// 2 ulp of expf over its clamped range [-87, 88.3]; below -87 it returns exp(-87) ~ 1.6e-38
// rather than a smaller number, which no sum of exponentials can notice.
#pragma once

#include <cstdint>
#include <cstring>
#include <limits>

// Wide vectors passed to and returned from functions compiled for narrower instruction sets
// would change the ABI; here they never cross a call (all of this is inlined), so the warning is
// noise, in every file that includes this one.
#if defined(__clang__)
#pragma clang diagnostic ignored "-Wpsabi"
#elif defined(__GNUC__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

namespace diffuse {
namespace simd {

#define DIFFUSE_INLINE inline __attribute__((always_inline))

template <int W>
struct Lanes {
  typedef float f32 __attribute__((vector_size(4 * W)));
  typedef int32_t i32 __attribute__((vector_size(4 * W)));
};
template <int W>
using vf = typename Lanes<W>::f32;
template <class V>
constexpr int lanes = static_cast<int>(sizeof(V) / sizeof(float));
template <class V>
using ints = typename Lanes<lanes<V>>::i32;

template <class V>
DIFFUSE_INLINE V splat(float s) {
  return V{} + s;
}
template <class V>
DIFFUSE_INLINE V load(const float* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <class V>
DIFFUSE_INLINE void store(float* p, const V& v) {
  std::memcpy(p, &v, sizeof v);
}
// The first n (< lanes) values of p, the other lanes set to fill.
template <class V>
DIFFUSE_INLINE V load_partial(const float* p, int64_t n, float fill) {
  float buf[lanes<V>];
  for (int i = 0; i < lanes<V>; ++i) buf[i] = i < n ? p[i] : fill;
  return load<V>(buf);
}
template <class V>
DIFFUSE_INLINE void store_partial(float* p, const V& v, int64_t n) {
  float buf[lanes<V>];
  store(buf, v);
  for (int64_t i = 0; i < n; ++i) p[i] = buf[i];
}
// 1 in lanes [0, n), 0 in the others.
template <class V>
DIFFUSE_INLINE V first_lanes(int64_t n) {
  float buf[lanes<V>];
  for (int i = 0; i < lanes<V>; ++i) buf[i] = i < n ? 1.f : 0.f;
  return load<V>(buf);
}

template <class V>
DIFFUSE_INLINE V max(const V& a, const V& b) {
  return a > b ? a : b;
}
template <class V>
DIFFUSE_INLINE V min(const V& a, const V& b) {
  return a < b ? a : b;
}

// Horizontal sum, as a tree of halves.
template <class V>
DIFFUSE_INLINE float reduce_add(const V& v) {
  constexpr int W = lanes<V>;
  if constexpr (W == 1) {
    return v[0];
  } else {
    vf<W / 2> lo, hi;
    std::memcpy(&lo, &v, sizeof lo);
    std::memcpy(&hi, reinterpret_cast<const char*>(&v) + sizeof lo, sizeof hi);
    return reduce_add(lo + hi);
  }
}
template <class V>
DIFFUSE_INLINE float reduce_max(const V& v) {
  float m = v[0];
  for (int i = 1; i < lanes<V>; ++i) m = v[i] > m ? v[i] : m;
  return m;
}

// max of x[0..n), W lanes at a time (-inf for n = 0).
template <int W>
DIFFUSE_INLINE float max_of(const float* x, int64_t n) {
  using V = vf<W>;
  const float lowest = -std::numeric_limits<float>::infinity();
  V m = splat<V>(lowest);
  int64_t j = 0;
  for (; j + W <= n; j += W) m = max(m, load<V>(x + j));
  if (j < n) m = max(m, load_partial<V>(x + j, n - j, lowest));
  return reduce_max(m);
}

// e^x, lane by lane.
template <class V>
DIFFUSE_INLINE V exp(const V& x_in) {
  const V x = min(max(x_in, splat<V>(-87.f)), splat<V>(88.3f));
  // n = round(x / ln 2) by the 1.5 * 2^23 trick; r = x - n ln 2 in two parts (Cody-Waite).
  const V shifted = x * 1.44269504088896341f + 12582912.f;
  const V n = shifted - 12582912.f;
  const V r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  V p = splat<V>(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const V y = p * (r * r) + r + 1.f;
  // y * 2^n by adding n to the exponent field; n is in [-126, 127], so the result is normal.
  return (V)((ints<V>)y + (__builtin_convertvector(n, ints<V>) << 23));
}
DIFFUSE_INLINE float exp(float x) { return exp(splat<vf<4>>(x))[0]; }

// sigmoid(x) = 1 / (1 + e^-x).
template <class V>
DIFFUSE_INLINE V sigmoid(const V& x) {
  return 1.f / (1.f + exp(-x));
}

// tanh(x) = 1 - 2 / (e^(2x) + 1): within ~1e-7 absolute of tanhf (the clamp of exp() saturates
// it to +-1 past |x| = 44).
template <class V>
DIFFUSE_INLINE V tanh(const V& x) {
  return 1.f - 2.f / (exp(x * 2.f) + 1.f);
}

// ------------------------------------------------------------------ instruction sets
enum class Isa { generic = 0, avx2 = 1, avx512 = 2 };

// The best instruction set this processor supports, capped by DIFFUSE_CPU_ISA when set.
Isa cpu_isa();

#if defined(__x86_64__) || defined(__i386__)
#define DIFFUSE_TARGET_AVX512 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma,f16c")))
#define DIFFUSE_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#else
#define DIFFUSE_TARGET_AVX512
#define DIFFUSE_TARGET_AVX2
#endif

// Defines `ret name params` that returns body<W> args, compiled for the best available
// instruction set at its width; body must be a DIFFUSE_INLINE template on the width, so that
// each copy compiles it for its own instruction set.
#define DIFFUSE_SIMD_CLONES(ret, name, body, params, args)                              \
  DIFFUSE_TARGET_AVX512 ret name##_avx512 params { return body<16> args; }             \
  DIFFUSE_TARGET_AVX2 ret name##_avx2 params { return body<8> args; }                  \
  ret name##_generic params { return body<4> args; }                                    \
  ret name params {                                                                     \
    static const ::diffuse::simd::Isa isa = ::diffuse::simd::cpu_isa();                 \
    if (isa == ::diffuse::simd::Isa::avx512) return name##_avx512 args;                 \
    if (isa == ::diffuse::simd::Isa::avx2) return name##_avx2 args;                     \
    return name##_generic args;                                                         \
  }

}  // namespace simd
}  // namespace diffuse
