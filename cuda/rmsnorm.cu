// RMSNorm, per row of bf16 with fp32 statistics:
//   forward:  y = x * rstd * w,  rstd = 1/sqrt(mean(x^2) + eps)   (rstd saved, f32)
//   backward: dx += rstd * (dy*w - x * rstd^2 * mean(dy*w*x))     (w is frozen)
// One block per row: a block reduction for the statistic, then a second pass over the row
// (still in L1/L2) for the output. 16-byte accesses when the rows allow them.
#include "ops.cuh"

namespace diffuse {
namespace cuda {
namespace {

__global__ void rmsnorm_forward_kernel(const bf16* __restrict__ x, const bf16* __restrict__ w, bf16* __restrict__ y,
                                       float* __restrict__ rstd, int64_t dim, float eps, bool vectorized) {
  __shared__ float red[32];
  const int64_t row = blockIdx.x;
  const bf16* xr = x + row * dim;
  bf16* yr = y + row * dim;
  float ss = 0.f;
  if (vectorized) {
    for (int64_t i = threadIdx.x; i < dim / 8; i += blockDim.x) {
      float v[8];
      unpack8(reinterpret_cast<const Pack8*>(xr)[i], v);
#pragma unroll
      for (int j = 0; j < 8; ++j) ss += v[j] * v[j];
    }
  } else {
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
      const float v = to_f(xr[i]);
      ss += v * v;
    }
  }
  ss = block_sum(ss, red);
  const float s = 1.f / sqrtf(ss / static_cast<float>(dim) + eps);
  if (threadIdx.x == 0) rstd[row] = s;
  if (vectorized) {
    for (int64_t i = threadIdx.x; i < dim / 8; i += blockDim.x) {
      float v[8], g[8];
      unpack8(reinterpret_cast<const Pack8*>(xr)[i], v);
      unpack8(reinterpret_cast<const Pack8*>(w)[i], g);
#pragma unroll
      for (int j = 0; j < 8; ++j) v[j] = v[j] * s * g[j];
      reinterpret_cast<Pack8*>(yr)[i] = pack8(v);
    }
  } else {
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) yr[i] = to_bf(to_f(xr[i]) * s * to_f(w[i]));
  }
}

__global__ void rmsnorm_backward_kernel(const bf16* __restrict__ dy, const bf16* __restrict__ x,
                                        const bf16* __restrict__ w, const float* __restrict__ rstd,
                                        bf16* __restrict__ dx, int64_t dim, bool vectorized) {
  __shared__ float red[32];
  const int64_t row = blockIdx.x;
  const bf16* dyr = dy + row * dim;
  const bf16* xr = x + row * dim;
  bf16* dxr = dx + row * dim;
  const float s = rstd[row];
  float dot = 0.f;  // sum(dy * w * x)
  if (vectorized) {
    for (int64_t i = threadIdx.x; i < dim / 8; i += blockDim.x) {
      float d[8], v[8], g[8];
      unpack8(reinterpret_cast<const Pack8*>(dyr)[i], d);
      unpack8(reinterpret_cast<const Pack8*>(xr)[i], v);
      unpack8(reinterpret_cast<const Pack8*>(w)[i], g);
#pragma unroll
      for (int j = 0; j < 8; ++j) dot += d[j] * g[j] * v[j];
    }
  } else {
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) dot += to_f(dyr[i]) * to_f(w[i]) * to_f(xr[i]);
  }
  dot = block_sum(dot, red);
  const float c = dot / static_cast<float>(dim) * s * s;
  if (vectorized) {
    for (int64_t i = threadIdx.x; i < dim / 8; i += blockDim.x) {
      float d[8], v[8], g[8], o[8];
      unpack8(reinterpret_cast<const Pack8*>(dyr)[i], d);
      unpack8(reinterpret_cast<const Pack8*>(xr)[i], v);
      unpack8(reinterpret_cast<const Pack8*>(w)[i], g);
      unpack8(reinterpret_cast<const Pack8*>(dxr)[i], o);
#pragma unroll
      for (int j = 0; j < 8; ++j) o[j] += s * (d[j] * g[j] - v[j] * c);
      reinterpret_cast<Pack8*>(dxr)[i] = pack8(o);
    }
  } else {
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x)
      dxr[i] = to_bf(to_f(dxr[i]) + s * (to_f(dyr[i]) * to_f(w[i]) - to_f(xr[i]) * c));
  }
}

int threads_for(int64_t items) { return static_cast<int>(std::clamp<int64_t>(round_up(items, 32), 32, 256)); }

}  // namespace

void rmsnorm_forward(const Context& ctx, const bf16* x, const bf16* w, bf16* y, float* rstd, int64_t rows,
                     int64_t dim, float eps) {
  if (rows <= 0 || dim <= 0) return;
  const bool vectorized = dim % 8 == 0 && aligned(x, 16) && aligned(w, 16) && aligned(y, 16);
  const int threads = threads_for(vectorized ? dim / 8 : dim);
  rmsnorm_forward_kernel<<<static_cast<unsigned>(rows), threads, 0, ctx.stream>>>(x, w, y, rstd, dim, eps, vectorized);
  DIFFUSE_LAUNCH_CHECK(rmsnorm_forward_kernel);
}

void rmsnorm_backward(const Context& ctx, const bf16* dy, const bf16* x, const bf16* w, const float* rstd,
                      bf16* dx, int64_t rows, int64_t dim) {
  if (rows <= 0 || dim <= 0) return;
  const bool vectorized = dim % 8 == 0 && aligned(dy, 16) && aligned(x, 16) && aligned(w, 16) && aligned(dx, 16);
  const int threads = threads_for(vectorized ? dim / 8 : dim);
  rmsnorm_backward_kernel<<<static_cast<unsigned>(rows), threads, 0, ctx.stream>>>(dy, x, w, rstd, dx, dim, vectorized);
  DIFFUSE_LAUNCH_CHECK(rmsnorm_backward_kernel);
}

}  // namespace cuda
}  // namespace diffuse
