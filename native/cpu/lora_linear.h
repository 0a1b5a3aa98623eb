// The LoRA linear layer on the CPU, with the rank-r path fused into the base GEMM.
//
//   forward:   u = x A^T                     [rows x r]   (kept for the backward)
//              y = x W^T + bias + s u B^T    one GEMM over K = in + r: [x | s u] . [W | B]^T
//   backward:  g = dy B                      [rows x r]
//              dx = dy W + s g A             one GEMM over K = out + r: [dy | s g] . [W ; A]
//              dA += s g^T x,  dB += s dy^T u      (skinny reductions over rows)
// W is frozen: its gradient is never formed. With no adapter (A == nullptr) these are the
// plain linear forward and input-gradient.
#pragma once

#include <cstdint>

#include "cpu/gemm.h"
#include "engine/backend.h"

namespace diffuse {

// A CPU weight matrix [out x in] in its storage, for the GEMM to widen as it packs.
inline StoredMatrix stored_matrix(const LinearWeight& W) {
  return {W.w, W.storage, storage_bytes(W.storage, W.in)};
}

void lora_linear_forward(const float* x, const LinearWeight& W, const LoraParams& lora, float* y,
                         float* u, int64_t rows);
void lora_linear_backward(const float* dy, const float* x, const LinearWeight& W,
                          const LoraParams& lora, const float* u, float* dx, bool accumulate,
                          const LoraGrads& grads, int64_t rows);

}  // namespace diffuse
