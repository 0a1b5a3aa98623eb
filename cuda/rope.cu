// Rotary position embedding in place on bf16 x [rows x heads x head_dim], Hugging Face layout:
// of each head the first rot_dim dimensions rotate, for i < rot_dim/2,
//   (x_i, x_{i+r/2}) <- s (x_i cos t - x_{i+r/2} sin t,  x_i sin t + x_{i+r/2} cos t),
//   t = pos[row] * inv_freq[i],  s = shape.scale (LongRoPE's attention factor),
// and dimensions rot_dim.. pass through (partial rotary, Phi-4-mini).
// The backward is the transpose: the same scaled rotation by -t, applied to the gradient.
// One block per row: its angles are computed once (in double, as on the CPU: positions reach
// the tens of thousands, where an f32 product loses the low bits the cosine depends on) into
// shared memory, then every head of the row is rotated from there.
#include "ops.cuh"

namespace diffuse {
namespace cuda {
namespace {

__global__ void rope_kernel(bf16* __restrict__ x, const int32_t* __restrict__ pos, const float* __restrict__ inv_freq,
                            int heads, int head_dim, int rot_dim, float scale, float sign) {
  extern __shared__ float angles[];  // s cos [half], then sign s sin [half]
  const int half = rot_dim / 2;
  const int64_t row = blockIdx.x;
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    double s, c;
    sincos(static_cast<double>(pos[row]) * static_cast<double>(inv_freq[i]), &s, &c);
    angles[i] = static_cast<float>(c) * scale;
    angles[half + i] = sign * static_cast<float>(s) * scale;
  }
  __syncthreads();
  bf16* xr = x + row * static_cast<int64_t>(heads) * head_dim;
  for (int idx = threadIdx.x; idx < heads * half; idx += blockDim.x) {
    const int h = idx / half, i = idx % half;
    bf16* xh = xr + static_cast<int64_t>(h) * head_dim;
    const float a = to_f(xh[i]), b = to_f(xh[i + half]);
    const float c = angles[i], s = angles[half + i];
    xh[i] = to_bf(a * c - b * s);
    xh[i + half] = to_bf(a * s + b * c);
  }
}

void rotate(const Context& ctx, bf16* x, const int32_t* pos, const float* inv_freq, int64_t rows, const RopeShape& shape,
            float sign) {
  require(shape.rot_dim > 0 && shape.rot_dim % 2 == 0 && shape.rot_dim <= shape.head_dim,
          "rope: rot_dim must be even, positive and at most head_dim");
  if (rows <= 0 || shape.heads <= 0) return;
  const int half = shape.rot_dim / 2;
  const int threads = static_cast<int>(std::clamp<int64_t>(round_up(int64_t{shape.heads} * half, 32), 32, 256));
  const size_t shared = sizeof(float) * shape.rot_dim;
  rope_kernel<<<static_cast<unsigned>(rows), threads, shared, ctx.stream>>>(x, pos, inv_freq, shape.heads, shape.head_dim,
                                                                            shape.rot_dim, shape.scale, sign);
  DIFFUSE_LAUNCH_CHECK(rope_kernel);
}

}  // namespace

void rope_forward(const Context& ctx, bf16* x, const int32_t* pos, const float* inv_freq, int64_t rows,
                  const RopeShape& shape) {
  rotate(ctx, x, pos, inv_freq, rows, shape, 1.f);
}

void rope_backward(const Context& ctx, bf16* dx, const int32_t* pos, const float* inv_freq, int64_t rows,
                   const RopeShape& shape) {
  rotate(ctx, dx, pos, inv_freq, rows, shape, -1.f);
}

}  // namespace cuda
}  // namespace diffuse
