// AdamW on the CPU, as torch.optim.AdamW computes it (decoupled weight decay, bias correction,
// its rounding of the constants — see AdamWConstants in engine/backend.h):
//   g *= grad_scale;  m += (1-b1)(g - m);  v = v b2 + (1-b2) g^2
//   p *= 1 - lr wd;   p -= (lr / (1-b1^t)) · m / (sqrt(v) / sqrt(1-b2^t) + eps)
// and the sum of squares behind global gradient-norm clipping.
#pragma once

#include <cstdint>

#include "engine/backend.h"

namespace diffuse {

void adamw_update(float* param, const float* grad, float* m, float* v, int64_t n,
                  const AdamWParams& params);
double sum_squares(const float* x, int64_t n);

}  // namespace diffuse
