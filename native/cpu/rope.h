// Rotary position embedding on the CPU, in place, Hugging Face layout: of each head the first
// rot_dim dimensions rotate, for i < rot_dim/2,
//   (x_i, x_{i+r/2}) <- s (x_i cos t - x_{i+r/2} sin t,  x_i sin t + x_{i+r/2} cos t),
//   t = pos[row] * inv_freq[i],  s = shape.scale (LongRoPE's attention factor),
// and dimensions rot_dim.. pass through (partial rotary, Phi-4-mini).
// The backward is the transpose, the same scaled rotation by -t applied to the gradient.
#pragma once

#include <cstdint>

#include "engine/backend.h"

namespace diffuse {

void rope_forward(float* x, const int32_t* pos, const float* inv_freq, int64_t rows, const RopeShape& shape);
void rope_backward(float* dx, const int32_t* pos, const float* inv_freq, int64_t rows, const RopeShape& shape);

}  // namespace diffuse
