// Embedding gather: out[r] = table[tokens[r]], table [vocab x dim] bf16. The table is frozen,
// so there is no backward. One block per row, 16-byte copies when rows are 16-byte aligned.
#include "ops.cuh"

namespace diffuse {
namespace cuda {
namespace {

__global__ void embedding_forward_kernel(const int32_t* __restrict__ tokens, const bf16* __restrict__ table,
                                         bf16* __restrict__ out, int64_t dim, bool vectorized) {
  const int64_t r = blockIdx.x;
  const bf16* src = table + static_cast<int64_t>(tokens[r]) * dim;
  bf16* dst = out + r * dim;
  if (vectorized) {
    const Pack8* s = reinterpret_cast<const Pack8*>(src);
    Pack8* d = reinterpret_cast<Pack8*>(dst);
    for (int64_t i = threadIdx.x; i < dim / 8; i += blockDim.x) d[i] = s[i];
  } else {
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) dst[i] = src[i];
  }
}

}  // namespace

void embedding_forward(const Context& ctx, const int32_t* tokens, const bf16* table, bf16* out, int64_t rows,
                       int64_t dim) {
  if (rows <= 0 || dim <= 0) return;
  const bool vectorized = dim % 8 == 0 && aligned(table, 16) && aligned(out, 16);
  embedding_forward_kernel<<<static_cast<unsigned>(rows), 128, 0, ctx.stream>>>(tokens, table, out, dim, vectorized);
  DIFFUSE_LAUNCH_CHECK(embedding_forward_kernel);
}

}  // namespace cuda
}  // namespace diffuse
