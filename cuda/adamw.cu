// AdamW on f32 parameters, as torch.optim.AdamW computes it (decoupled weight decay, bias
// correction), elementwise in the same order as the CPU backend:
//   g *= grad_scale;  m += (1-b1)(g - m);  v = v b2 + (1-b2) g^2
//   p *= 1 - lr wd;   p -= (lr / (1-b1^t)) · m / (sqrt(v) / sqrt(1-b2^t) + eps)
// with the constants rounded as torch rounds them (AdamWConstants in engine/backend.h).
// and the sum of squares behind global gradient-norm clipping: per-block partial sums in
// double, then one block adds the partials.
#include <cmath>

#include "ops.cuh"

namespace diffuse {
namespace cuda {
namespace {

__global__ void adamw_kernel(float* __restrict__ param, const float* __restrict__ grad, float* __restrict__ m,
                             float* __restrict__ v, int64_t n, AdamWConstants c) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const float g = grad[i] * c.grad_scale;
    const float mi = m[i] + c.one_minus_beta1 * (g - m[i]);
    const float vi = v[i] * c.beta2 + c.one_minus_beta2 * g * g;
    m[i] = mi;
    v[i] = vi;
    const float denom = sqrtf(vi) / c.bias2_sqrt + c.eps;
    param[i] = param[i] * c.decay + -c.step_size * (mi / denom);
  }
}

constexpr int kSumBlocks = 512;

__global__ void sum_squares_partial_kernel(const float* __restrict__ x, int64_t n, double* __restrict__ partial) {
  __shared__ double red[32];
  double s = 0;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const double xi = x[i];
    s += xi * xi;
  }
  s = block_sum(s, red);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

__global__ void sum_partials_kernel(const double* __restrict__ partial, int count, double* __restrict__ total) {
  __shared__ double red[32];
  double s = 0;
  for (int i = threadIdx.x; i < count; i += blockDim.x) s += partial[i];
  s = block_sum(s, red);
  if (threadIdx.x == 0) *total = s;
}

}  // namespace

void adamw_update(const Context& ctx, float* param, const float* grad, float* m, float* v, int64_t n,
                  const AdamWParams& p) {
  if (n <= 0) return;
  adamw_kernel<<<grid_for(n, 256, ctx), 256, 0, ctx.stream>>>(param, grad, m, v, n, adamw_constants(p));
  DIFFUSE_LAUNCH_CHECK(adamw_kernel);
}

double sum_squares(const Context& ctx, const float* x, int64_t n) {
  if (n <= 0) return 0.0;
  const int blocks = static_cast<int>(std::min<int64_t>(kSumBlocks, ceil_div(n, 256)));
  BufferPtr partial = ctx.scratch(sizeof(double) * (blocks + 1), "sum of squares partials");
  double* parts = Context::ptr<double>(partial);
  sum_squares_partial_kernel<<<blocks, 256, 0, ctx.stream>>>(x, n, parts);
  DIFFUSE_LAUNCH_CHECK(sum_squares_partial_kernel);
  sum_partials_kernel<<<1, 256, 0, ctx.stream>>>(parts, blocks, parts + blocks);
  DIFFUSE_LAUNCH_CHECK(sum_partials_kernel);
  double total = 0;
  DIFFUSE_CUDA_CHECK(cudaMemcpyAsync(&total, parts + blocks, sizeof total, cudaMemcpyDeviceToHost, ctx.stream));
  DIFFUSE_CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
  return total;
}

}  // namespace cuda
}  // namespace diffuse
