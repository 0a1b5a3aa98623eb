// The SwiGLU gate, elementwise over bf16 with fp32 arithmetic:
//   forward:  h = silu(g) u,  silu(g) = g sigmoid(g)
//   backward: dg = dh u sigmoid(g) (1 + g (1 - sigmoid(g))),  du = dh silu(g)
#include "ops.cuh"

namespace diffuse {
namespace cuda {
namespace {

__device__ __forceinline__ float sigmoid(float g) { return 1.f / (1.f + expf(-g)); }

// h may alias gate (the session computes the gate in place), so no __restrict__ here.
__global__ void swiglu_forward_kernel(const bf16* gate, const bf16* up, bf16* h,
                                      int64_t n, bool vectorized) {
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  const int64_t first = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (vectorized) {
    for (int64_t i = first; i < n / 8; i += stride) {
      float g[8], u[8], o[8];
      unpack8(reinterpret_cast<const Pack8*>(gate)[i], g);
      unpack8(reinterpret_cast<const Pack8*>(up)[i], u);
#pragma unroll
      for (int j = 0; j < 8; ++j) o[j] = g[j] * sigmoid(g[j]) * u[j];
      reinterpret_cast<Pack8*>(h)[i] = pack8(o);
    }
  } else {
    for (int64_t i = first; i < n; i += stride) {
      const float g = to_f(gate[i]);
      h[i] = to_bf(g * sigmoid(g) * to_f(up[i]));
    }
  }
}

__global__ void swiglu_backward_kernel(const bf16* __restrict__ dh, const bf16* __restrict__ gate,
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
        const float s = sigmoid(g[j]);
        dg[j] = d[j] * u[j] * s * (1.f + g[j] * (1.f - s));
        du[j] = d[j] * g[j] * s;
      }
      reinterpret_cast<Pack8*>(dgate)[i] = pack8(dg);
      reinterpret_cast<Pack8*>(dup)[i] = pack8(du);
    }
  } else {
    for (int64_t i = first; i < n; i += stride) {
      const float d = to_f(dh[i]), g = to_f(gate[i]), u = to_f(up[i]);
      const float s = sigmoid(g);
      dgate[i] = to_bf(d * u * s * (1.f + g * (1.f - s)));
      dup[i] = to_bf(d * g * s);
    }
  }
}

}  // namespace

void swiglu_forward(const Context& ctx, const bf16* gate, const bf16* up, bf16* h, int64_t n) {
  if (n <= 0) return;
  const bool vectorized = n % 8 == 0 && aligned(gate, 16) && aligned(up, 16) && aligned(h, 16);
  swiglu_forward_kernel<<<grid_for(vectorized ? n / 8 : n, 256, ctx), 256, 0, ctx.stream>>>(gate, up, h, n, vectorized);
  DIFFUSE_LAUNCH_CHECK(swiglu_forward_kernel);
}

void swiglu_backward(const Context& ctx, const bf16* dh, const bf16* gate, const bf16* up, bf16* dgate, bf16* dup,
                     int64_t n) {
  if (n <= 0) return;
  const bool vectorized =
      n % 8 == 0 && aligned(dh, 16) && aligned(gate, 16) && aligned(up, 16) && aligned(dgate, 16) && aligned(dup, 16);
  swiglu_backward_kernel<<<grid_for(vectorized ? n / 8 : n, 256, ctx), 256, 0, ctx.stream>>>(dh, gate, up, dgate, dup, n,
                                                                                              vectorized);
  DIFFUSE_LAUNCH_CHECK(swiglu_backward_kernel);
}

}  // namespace cuda
}  // namespace diffuse
