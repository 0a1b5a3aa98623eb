// The LoRA linear layer on the CPU (math in lora_linear.h). The rank-r term rides along with
// the base GEMM as a K extension, so y and dx are written in one pass each; the bias is added
// as the GEMM stores its tiles. The scale s is folded into the adapter's small matrices (out x r),
// never into an activation-sized copy:
//   forward:   u = x A^T;   y = [x | u] . [W | s B]^T + bias
//   backward:  sg = dy (s B);   dx (=, +=) [dy | sg] . [W ; A]
//              dA += sg^T x;    dB += s (u^T dy)^T  (formed as r x out, the wide way round)
#include "cpu/lora_linear.h"

#include <vector>

#include "cpu/gemm.h"

namespace diffuse {
namespace {

// Reused per-thread buffers for the rank-sized operands.
struct LoraScratch {
  std::vector<float> weight;  // s B [out x r] (forward) or s B^T [r x out] (backward)
  std::vector<float> sg;      // [rows x r]
  std::vector<float> uty;     // u^T dy [r x out]
};

LoraScratch& scratch() {
  thread_local LoraScratch s;
  return s;
}

float* sized(std::vector<float>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

}  // namespace

void lora_linear_forward(const float* x, const LinearWeight& W, const LoraParams& lora, float* y,
                         float* u, int64_t rows) {
  const StoredMatrix w = stored_matrix(W);
  GemmExtra extra;
  extra.bias = static_cast<const float*>(W.bias);
  if (lora.active()) {
    const int64_t r = lora.rank;
    sgemm_nt(rows, r, W.in, x, W.in, lora.A, W.in, 0.f, u, r);  // u = x A^T
    float* sB = sized(scratch().weight, static_cast<size_t>(W.out * r));
    for (int64_t i = 0; i < W.out * r; ++i) sB[i] = lora.scale * lora.B[i];
    extra.A2 = u, extra.lda2 = r, extra.B2 = sB, extra.ldb2 = r, extra.K2 = r;
  }
  sgemm_nt(rows, W.out, W.in, x, W.in, w, 0.f, y, W.out, &extra);
}

void lora_linear_backward(const float* dy, const float* x, const LinearWeight& W,
                          const LoraParams& lora, const float* u, float* dx, bool accumulate,
                          const LoraGrads& grads, int64_t rows) {
  const StoredMatrix w = stored_matrix(W);
  const float beta = accumulate ? 1.f : 0.f;
  if (!lora.active()) {
    sgemm_nn(rows, W.in, W.out, dy, W.out, w, beta, dx, W.in);
    return;
  }
  const int64_t r = lora.rank, in = W.in, out = W.out;
  LoraScratch& s = scratch();
  // sg = dy (s B) = dy (s B^T)^T: an nt product with r columns, on (s B)^T [r x out].
  float* sBt = sized(s.weight, static_cast<size_t>(r * out));
  for (int64_t j = 0; j < out; ++j)
    for (int64_t c = 0; c < r; ++c) sBt[c * out + j] = lora.scale * lora.B[j * r + c];
  float* sg = sized(s.sg, static_cast<size_t>(rows * r));
  sgemm_nt(rows, r, out, dy, out, sBt, out, 0.f, sg, r);
  GemmExtra extra{sg, r, lora.A, in, r};  // + sg A
  sgemm_nn(rows, in, out, dy, out, w, beta, dx, in, &extra);
  if (grads.dA) sgemm_tn(r, in, rows, sg, r, x, in, 1.f, grads.dA, in);  // dA += sg^T x
  if (grads.dB) {
    // u^T dy [r x out] reads dy once with full vectors along out; dB [out x r] += s (u^T dy)^T.
    float* uty = sized(s.uty, static_cast<size_t>(r * out));
    sgemm_tn(r, out, rows, u, r, dy, out, 0.f, uty, out);
    for (int64_t j = 0; j < out; ++j)
      for (int64_t c = 0; c < r; ++c) grads.dB[j * r + c] += lora.scale * uty[c * out + j];
  }
}

}  // namespace diffuse
