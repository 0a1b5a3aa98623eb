// Conversions between f32 and the bf16 the backend stores activations and weights in, and
// weights made on the device (no CPU twin: the CPU backend keeps f32 and fills on the host).
//   f32 -> bf16: round to nearest even;  bf16 -> f32: exact.
//   normal init: w_i = bf16(std * normal_from_counter(seed, i)), the same counter-based draw as
//   the CPU backend's (engine/random.h), so both backends start from the same weights up to
//   the bf16 rounding.
#include "engine/random.h"
#include "ops.cuh"

namespace diffuse {
namespace cuda {
namespace {

__global__ void f32_to_bf16_kernel(const float* __restrict__ src, bf16* __restrict__ dst, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    dst[i] = __float2bfloat16(src[i]);
}

__global__ void bf16_to_f32_kernel(const bf16* __restrict__ src, float* __restrict__ dst, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    dst[i] = __bfloat162float(src[i]);
}

__global__ void fill_normal_kernel(bf16* __restrict__ dst, int64_t n, float std, uint64_t seed) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    dst[i] = __float2bfloat16(std * normal_from_counter(seed, static_cast<uint64_t>(i)));
}

__global__ void fill_constant_kernel(bf16* __restrict__ dst, int64_t n, float value) {
  const bf16 v = __float2bfloat16(value);
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) dst[i] = v;
}

}  // namespace

void f32_to_bf16(const Context& ctx, const float* src, bf16* dst, int64_t n) {
  if (n <= 0) return;
  f32_to_bf16_kernel<<<grid_for(n, 256, ctx), 256, 0, ctx.stream>>>(src, dst, n);
  DIFFUSE_LAUNCH_CHECK(f32_to_bf16_kernel);
}

void bf16_to_f32(const Context& ctx, const bf16* src, float* dst, int64_t n) {
  if (n <= 0) return;
  bf16_to_f32_kernel<<<grid_for(n, 256, ctx), 256, 0, ctx.stream>>>(src, dst, n);
  DIFFUSE_LAUNCH_CHECK(bf16_to_f32_kernel);
}

void fill_normal(const Context& ctx, bf16* dst, int64_t n, float std, uint64_t seed) {
  if (n <= 0) return;
  fill_normal_kernel<<<grid_for(n, 256, ctx), 256, 0, ctx.stream>>>(dst, n, std, seed);
  DIFFUSE_LAUNCH_CHECK(fill_normal_kernel);
}

void fill_constant(const Context& ctx, bf16* dst, int64_t n, float value) {
  if (n <= 0) return;
  fill_constant_kernel<<<grid_for(n, 256, ctx), 256, 0, ctx.stream>>>(dst, n, value);
  DIFFUSE_LAUNCH_CHECK(fill_constant_kernel);
}

}  // namespace cuda
}  // namespace diffuse
