// The residual connection on the CPU: y += x. Its backward is the identity (the gradient
// flows to both branches unchanged), so there is no kernel for it. Also x *= s, the embedding
// scale (Gemma's sqrt(hidden)), which needs no backward either: nothing before it is trained.
#pragma once

#include <cstdint>

#include "engine/backend.h"

namespace diffuse {

void add_inplace(float* y, const float* x, int64_t n);
void scale_inplace(float* x, float s, int64_t n);

}  // namespace diffuse
