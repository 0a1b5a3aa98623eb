// The residual connection: y += x, elementwise over bf16 (fp32 add, one rounding). Its
// backward is the identity, so there is no backward kernel. Also x *= s, the embedding scale
// (Gemma's sqrt(hidden)), with s rounded to bf16 first as transformers casts the normaliser to
// the hidden states' dtype; nothing before it is trained, so no backward either.
#include "ops.cuh"

namespace diffuse {
namespace cuda {
namespace {

__global__ void add_inplace_kernel(bf16* __restrict__ y, const bf16* __restrict__ x, int64_t n, bool vectorized) {
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  const int64_t first = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (vectorized) {
    Pack8* y8 = reinterpret_cast<Pack8*>(y);
    const Pack8* x8 = reinterpret_cast<const Pack8*>(x);
    for (int64_t i = first; i < n / 8; i += stride) {
      float a[8], b[8];
      unpack8(y8[i], a);
      unpack8(x8[i], b);
#pragma unroll
      for (int j = 0; j < 8; ++j) a[j] += b[j];
      y8[i] = pack8(a);
    }
  } else {
    for (int64_t i = first; i < n; i += stride) y[i] = to_bf(to_f(y[i]) + to_f(x[i]));
  }
}

__global__ void scale_inplace_kernel(bf16* __restrict__ x, float s, int64_t n) {
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += stride) x[i] = to_bf(to_f(x[i]) * s);
}

}  // namespace

void scale_inplace(const Context& ctx, bf16* x, float s, int64_t n) {
  if (n <= 0) return;
  scale_inplace_kernel<<<grid_for(n, 256, ctx), 256, 0, ctx.stream>>>(x, __bfloat162float(__float2bfloat16(s)), n);
  DIFFUSE_LAUNCH_CHECK(scale_inplace_kernel);
}

void add_inplace(const Context& ctx, bf16* y, const bf16* x, int64_t n) {
  if (n <= 0) return;
  const bool vectorized = n % 8 == 0 && aligned(y, 16) && aligned(x, 16);
  add_inplace_kernel<<<grid_for(vectorized ? n / 8 : n, 256, ctx), 256, 0, ctx.stream>>>(y, x, n, vectorized);
  DIFFUSE_LAUNCH_CHECK(add_inplace_kernel);
}

}  // namespace cuda
}  // namespace diffuse
