// AdamW on f32 parameters, as torch.optim.AdamW computes it (decoupled weight decay, bias
// correction), elementwise in the same order as the CPU backend:
//   g *= grad_scale;  m += (1-b1)(g - m);  v = v b2 + (1-b2) g^2
//   p *= 1 - lr wd;   p -= (lr / (1-b1^t)) · m / (sqrt(v) / sqrt(1-b2^t) + eps)
// with the constants rounded as torch rounds them (AdamWConstants in engine/backend.h).
// and the sum of squares behind global gradient-norm clipping, over all of an adapter's
// gradient tensors at once: per-block partial sums in double, then one block adds the
// partials, then one copy to the host.
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
constexpr int kSumThreads = 256;
constexpr int kSumTensors = 128;  // tensors per launch: 2 KiB of kernel parameters

// Up to kSumTensors tensors, seen as one concatenation: element e of the concatenation goes
// to thread e % threads, so every thread gets the same share whatever the tensor sizes.
struct SumTable {
  const float* x[kSumTensors];
  int64_t start[kSumTensors + 1];  // offsets in the concatenation; start[count] = its length
  int count;
};

__global__ void __launch_bounds__(kSumThreads) sum_squares_partial_kernel(SumTable t, double* __restrict__ partial) {
  __shared__ double red[32];
  const int64_t threads = int64_t{gridDim.x} * blockDim.x, me = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  double s = 0;
  for (int i = 0; i < t.count; ++i) {
    const int64_t n = t.start[i + 1] - t.start[i];
    const float* x = t.x[i];
    for (int64_t j = ((me - t.start[i]) % threads + threads) % threads; j < n; j += threads) {
      const double xj = x[j];
      s += xj * xj;
    }
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

// One launch per kSumTensors tensors, each writing its blocks' partial sums, then one block
// adds them all and one copy brings the total back: one wait, however many tensors.
double sum_squares_many(const Context& ctx, const float* const* xs, const int64_t* ns, int count) {
  int64_t total_n = 0;
  for (int i = 0; i < count; ++i) total_n += std::max<int64_t>(ns[i], 0);
  if (total_n == 0) return 0.0;
  const int blocks = static_cast<int>(std::min<int64_t>(kSumBlocks, ceil_div(total_n, kSumThreads)));
  const int launches = static_cast<int>(ceil_div(count, kSumTensors));
  BufferPtr partial = ctx.scratch(sizeof(double) * (static_cast<size_t>(launches) * blocks + 1), "sum of squares partials");
  double* parts = Context::ptr<double>(partial);
  for (int l = 0; l < launches; ++l) {
    SumTable t{};
    t.count = std::min(kSumTensors, count - l * kSumTensors);
    for (int i = 0; i < t.count; ++i) {
      t.x[i] = xs[l * kSumTensors + i];
      t.start[i + 1] = t.start[i] + std::max<int64_t>(ns[l * kSumTensors + i], 0);
    }
    sum_squares_partial_kernel<<<blocks, kSumThreads, 0, ctx.stream>>>(t, parts + static_cast<int64_t>(l) * blocks);
    DIFFUSE_LAUNCH_CHECK(sum_squares_partial_kernel);
  }
  double* result = parts + static_cast<int64_t>(launches) * blocks;
  sum_partials_kernel<<<1, 256, 0, ctx.stream>>>(parts, launches * blocks, result);
  DIFFUSE_LAUNCH_CHECK(sum_partials_kernel);
  double total = 0;
  DIFFUSE_CUDA_CHECK(cudaMemcpyAsync(&total, result, sizeof total, cudaMemcpyDeviceToHost, ctx.stream));
  DIFFUSE_CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
  return total;
}

}  // namespace cuda
}  // namespace diffuse
