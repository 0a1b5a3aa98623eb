#include "cpu/rope.h"

#include <cmath>
#include <vector>

#include "cpu/thread_pool.h"
#include "engine/errors.h"

namespace diffuse {
namespace {

// Rotates the first rot_dim dimensions of every head of each row by sign * pos * inv_freq,
// cos and sin scaled by shape.scale.
void rotate(float* x, const int32_t* pos, const float* inv_freq, int64_t rows, const RopeShape& s, float sign) {
  require(s.rot_dim > 0 && s.rot_dim % 2 == 0 && s.rot_dim <= s.head_dim, "rope: rot_dim must be even, positive and at most head_dim");
  const int half = s.rot_dim / 2;
  parallel_for(rows, 8, [&](int64_t begin, int64_t end) {
    std::vector<float> cos_t(half), sin_t(half);
    for (int64_t r = begin; r < end; ++r) {
      for (int i = 0; i < half; ++i) {
        // The angle in double: positions reach the tens of thousands, where f32 products of
        // position and frequency lose the low bits that the cosine depends on.
        const double t = static_cast<double>(pos[r]) * static_cast<double>(inv_freq[i]);
        cos_t[i] = static_cast<float>(std::cos(t)) * s.scale;
        sin_t[i] = sign * static_cast<float>(std::sin(t)) * s.scale;
      }
      float* xr = x + r * static_cast<int64_t>(s.heads) * s.head_dim;
      for (int h = 0; h < s.heads; ++h) {
        float* xh = xr + static_cast<int64_t>(h) * s.head_dim;
        for (int i = 0; i < half; ++i) {
          const float a = xh[i], b = xh[i + half];
          xh[i] = a * cos_t[i] - b * sin_t[i];
          xh[i + half] = a * sin_t[i] + b * cos_t[i];
        }
      }
    }
  });
}

}  // namespace

void rope_forward(float* x, const int32_t* pos, const float* inv_freq, int64_t rows, const RopeShape& shape) {
  rotate(x, pos, inv_freq, rows, shape, 1.f);
}

void rope_backward(float* dx, const int32_t* pos, const float* inv_freq, int64_t rows, const RopeShape& shape) {
  rotate(dx, pos, inv_freq, rows, shape, -1.f);
}

}  // namespace diffuse
