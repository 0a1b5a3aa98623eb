// The GeGLU gate (Gemma's MLP), elementwise over bf16 with fp32 arithmetic, tanh-approximate
// GELU as PyTorch's gelu(approximate="tanh"):
//   forward:  h = gelu(g) u,  gelu(g) = g/2 (1 + t),  t = tanh(c (g + 0.044715 g^3)),  c = sqrt(2/pi)
//   backward: dg = dh u gelu'(g),  gelu'(g) = (1 + t)/2 + g/2 (1 - t^2) c (1 + 3 0.044715 g^2)
//             du = dh gelu(g)
#include "ops.cuh"

namespace diffuse {
namespace cuda {
namespace {

constexpr float kC = 0.7978845608028654f;  // sqrt(2/pi)
constexpr float kA = 0.044715f;

__device__ __forceinline__ float gelu_tanh(float g) { return 0.5f * g * (1.f + tanhf(kC * (g + kA * g * g * g))); }
__device__ __forceinline__ void gelu_tanh_grad(float g, float& gelu, float& dgelu) {
  const float t = tanhf(kC * (g + kA * g * g * g));
  gelu = 0.5f * g * (1.f + t);
  dgelu = 0.5f * (1.f + t) + 0.5f * g * (1.f - t * t) * kC * (1.f + 3.f * kA * g * g);
}

// h may alias gate (the session computes the gate in place), so no __restrict__ here.
__global__ void geglu_forward_kernel(const bf16* gate, const bf16* up, bf16* h, int64_t n, bool vectorized) {
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  const int64_t first = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (vectorized) {
    for (int64_t i = first; i < n / 8; i += stride) {
      float g[8], u[8], o[8];
      unpack8(reinterpret_cast<const Pack8*>(gate)[i], g);
      unpack8(reinterpret_cast<const Pack8*>(up)[i], u);
#pragma unroll
      for (int j = 0; j < 8; ++j) o[j] = gelu_tanh(g[j]) * u[j];
      reinterpret_cast<Pack8*>(h)[i] = pack8(o);
    }
  } else {
    for (int64_t i = first; i < n; i += stride) h[i] = to_bf(gelu_tanh(to_f(gate[i])) * to_f(up[i]));
  }
}

__global__ void geglu_backward_kernel(const bf16* __restrict__ dh, const bf16* __restrict__ gate,
                                      const bf16* __restrict__ up, bf16* __restrict__ dgate, bf16* __restrict__ dup,
                                      int64_t n, bool vectorized) {
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  const int64_t first = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (vectorized) {
    for (int64_t i = first; i < n / 8; i += stride) {
      float d[8], g[8], u[8], dg[8], du[8];
      unpack8(reinterpret_cast<const Pack8*>(dh)[i], d);
      unpack8(reinterpret_cast<const Pack8*>(gate)[i], g);
      unpack8(reinterpret_cast<const Pack8*>(up)[i], u);
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        float gelu, dgelu;
        gelu_tanh_grad(g[j], gelu, dgelu);
        dg[j] = d[j] * u[j] * dgelu;
        du[j] = d[j] * gelu;
      }
      reinterpret_cast<Pack8*>(dgate)[i] = pack8(dg);
      reinterpret_cast<Pack8*>(dup)[i] = pack8(du);
    }
  } else {
    for (int64_t i = first; i < n; i += stride) {
      const float d = to_f(dh[i]), u = to_f(up[i]);
      float gelu, dgelu;
      gelu_tanh_grad(to_f(gate[i]), gelu, dgelu);
      dgate[i] = to_bf(d * u * dgelu);
      dup[i] = to_bf(d * gelu);
    }
  }
}

}  // namespace

void geglu_forward(const Context& ctx, const bf16* gate, const bf16* up, bf16* h, int64_t n) {
  if (n <= 0) return;
  const bool vectorized = n % 8 == 0 && aligned(gate, 16) && aligned(up, 16) && aligned(h, 16);
  geglu_forward_kernel<<<grid_for(vectorized ? n / 8 : n, 256, ctx), 256, 0, ctx.stream>>>(gate, up, h, n, vectorized);
  DIFFUSE_LAUNCH_CHECK(geglu_forward_kernel);
}

void geglu_backward(const Context& ctx, const bf16* dh, const bf16* gate, const bf16* up, bf16* dgate, bf16* dup,
                    int64_t n) {
  if (n <= 0) return;
  const bool vectorized =
      n % 8 == 0 && aligned(dh, 16) && aligned(gate, 16) && aligned(up, 16) && aligned(dgate, 16) && aligned(dup, 16);
  geglu_backward_kernel<<<grid_for(vectorized ? n / 8 : n, 256, ctx), 256, 0, ctx.stream>>>(dh, gate, up, dgate, dup, n,
                                                                                             vectorized);
  DIFFUSE_LAUNCH_CHECK(geglu_backward_kernel);
}

}  // namespace cuda
}  // namespace diffuse
