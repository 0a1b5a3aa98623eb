// The GeGLU gate on the CPU (Gemma's MLP), elementwise, with the tanh approximation of GELU
// (PyTorch's gelu(approximate="tanh"), transformers' gelu_pytorch_tanh):
//   forward:  h = gelu(g) u,  gelu(g) = g/2 (1 + t),  t = tanh(c (g + 0.044715 g^3)),  c = sqrt(2/pi)
//   backward: dg = dh u gelu'(g),  gelu'(g) = (1 + t)/2 + g/2 (1 - t^2) c (1 + 3 0.044715 g^2)
//             du = dh gelu(g)
#pragma once

#include <cstdint>

#include "engine/backend.h"

namespace diffuse {

void geglu_forward(const float* gate, const float* up, float* h, int64_t n);
void geglu_backward(const float* dh, const float* gate, const float* up, float* dgate,
                    float* dup, int64_t n);

}  // namespace diffuse
