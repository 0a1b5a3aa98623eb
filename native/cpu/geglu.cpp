#include "cpu/geglu.h"

#include "cpu/simd.h"
#include "cpu/thread_pool.h"

namespace diffuse {
namespace {

constexpr float kC = 0.7978845608028654f;  // sqrt(2/pi)
constexpr float kA = 0.044715f;

template <int W>
DIFFUSE_INLINE void forward_body(const float* gate, const float* up, float* h, int64_t n) {
  using V = simd::vf<W>;
  for (int64_t i = 0; i < n; i += W) {
    const int64_t m = n - i < W ? n - i : W;
    const V g = m == W ? simd::load<V>(gate + i) : simd::load_partial<V>(gate + i, m, 0.f);
    const V u = m == W ? simd::load<V>(up + i) : simd::load_partial<V>(up + i, m, 0.f);
    const V t = simd::tanh((g + kA * g * g * g) * kC);
    const V y = 0.5f * g * (1.f + t) * u;
    if (m == W) simd::store(h + i, y);
    else simd::store_partial(h + i, y, m);
  }
}
DIFFUSE_SIMD_CLONES(void, forward_range, forward_body, (const float* gate, const float* up, float* h, int64_t n),
                    (gate, up, h, n))

template <int W>
DIFFUSE_INLINE void backward_body(const float* dh, const float* gate, const float* up, float* dgate,
                                  float* dup, int64_t n) {
  using V = simd::vf<W>;
  for (int64_t i = 0; i < n; i += W) {
    const int64_t m = n - i < W ? n - i : W;
    const V g = m == W ? simd::load<V>(gate + i) : simd::load_partial<V>(gate + i, m, 0.f);
    const V u = m == W ? simd::load<V>(up + i) : simd::load_partial<V>(up + i, m, 0.f);
    const V d = m == W ? simd::load<V>(dh + i) : simd::load_partial<V>(dh + i, m, 0.f);
    const V t = simd::tanh((g + kA * g * g * g) * kC);
    const V gelu = 0.5f * g * (1.f + t);
    const V dgelu = 0.5f * (1.f + t) + 0.5f * g * (1.f - t * t) * kC * (1.f + 3.f * kA * g * g);
    const V dg = d * u * dgelu;
    const V du = d * gelu;
    if (m == W) {
      simd::store(dgate + i, dg);
      simd::store(dup + i, du);
    } else {
      simd::store_partial(dgate + i, dg, m);
      simd::store_partial(dup + i, du, m);
    }
  }
}
DIFFUSE_SIMD_CLONES(void, backward_range, backward_body,
                    (const float* dh, const float* gate, const float* up, float* dgate, float* dup, int64_t n),
                    (dh, gate, up, dgate, dup, n))

}  // namespace

// h = gelu_tanh(gate) * up; the forward may run in place (h == gate).
void geglu_forward(const float* gate, const float* up, float* h, int64_t n) {
  parallel_for(n, 1 << 14, [&](int64_t begin, int64_t end) {
    forward_range(gate + begin, up + begin, h + begin, end - begin);
  });
}

void geglu_backward(const float* dh, const float* gate, const float* up, float* dgate,
                    float* dup, int64_t n) {
  parallel_for(n, 1 << 14, [&](int64_t begin, int64_t end) {
    backward_range(dh + begin, gate + begin, up + begin, dgate + begin, dup + begin, end - begin);
  });
}

}  // namespace diffuse
