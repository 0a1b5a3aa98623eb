// Sampling the next token from full-vocabulary logits, as the CPU backend does it:
//   z = head . h (cuBLASLt, f32 logits for a group of rows at a time);
//   temperature 0: the first arg max;
//   otherwise w_v = exp((z_v - max z) / T); without filters, the first v whose running sum of
//   w passes u sum(w); with top-k / top-p, the candidates in descending logit order (a stable
//   segmented radix sort, so ties keep the lower index first), cut to the first k, then to
//   the shortest prefix holding top_p of their weight, and the draw runs over what is kept,
//   in ascending token id order like the unfiltered one (and the CPU's).
// u = uniform_from_counter(seed, stream, step) (engine/random.h), the CPU's draw, so a seed
// gives the same samples on both backends up to logits that differ in the last bits.
// logp is log softmax(z)[token] at temperature 1. Sums are in double, like the CPU's.
#include <climits>
#include <cub/block/block_scan.cuh>
#include <cub/device/device_segmented_radix_sort.cuh>

#include "engine/random.h"
#include "gemm.cuh"
#include "ops.cuh"

namespace diffuse {
namespace cuda {
namespace {

constexpr int kThreads = 256;

struct DrawShared {
  typename cub::BlockScan<double, kThreads>::TempStorage scan;
  double red[32];
  float redf[32];
  double carry;
  int found;
};

// The first i < count at which the running sum of weight(i) reaches `target` (passes it
// when `strictly`), or -1 when it never does.
template <typename Weight>
__device__ int first_crossing(DrawShared& sh, int count, Weight weight, double target, bool strictly) {
  if (threadIdx.x == 0) {
    sh.carry = 0;
    sh.found = INT_MAX;
  }
  __syncthreads();
  for (int base = 0; base < count; base += kThreads) {
    const int i = base + static_cast<int>(threadIdx.x);
    double running = 0, tile_total = 0;
    cub::BlockScan<double, kThreads>(sh.scan).InclusiveSum(i < count ? weight(i) : 0.0, running, tile_total);
    running += sh.carry;
    if (i < count && (strictly ? running > target : running >= target)) atomicMin(&sh.found, i);
    __syncthreads();
    if (sh.found != INT_MAX) break;  // every thread reads the same value
    if (threadIdx.x == 0) sh.carry += tile_total;
    __syncthreads();
  }
  const int found = sh.found;
  __syncthreads();  // read by all before the next call resets it
  return found == INT_MAX ? -1 : found;
}

template <typename Weight>
__device__ double sum_weights(DrawShared& sh, int count, Weight weight) {
  double s = 0;
  for (int i = threadIdx.x; i < count; i += kThreads) s += weight(i);
  return block_sum(s, sh.red);
}

// One block per row of the group. sorted_z / sorted_idx are only read when filtering.
__global__ void __launch_bounds__(kThreads) draw_kernel(const float* __restrict__ Z, int vocab,
                                                        const float* __restrict__ sorted_z,
                                                        const int32_t* __restrict__ sorted_idx, SampleParams sp,
                                                        const uint64_t* __restrict__ streams, uint64_t step,
                                                        int32_t* __restrict__ tokens, float* __restrict__ logp) {
  __shared__ DrawShared sh;
  const int64_t i = blockIdx.x;
  const float* z = Z + i * vocab;
  float zmax = -INFINITY;
  for (int j = threadIdx.x; j < vocab; j += kThreads) zmax = fmaxf(zmax, z[j]);
  zmax = block_max(zmax, sh.redf);
  const double norm = sum_weights(sh, vocab, [&](int j) { return exp(static_cast<double>(z[j] - zmax)); });

  int token;
  if (sp.temperature <= 0.f) {
    if (threadIdx.x == 0) sh.found = INT_MAX;
    __syncthreads();
    for (int j = threadIdx.x; j < vocab; j += kThreads)
      if (z[j] == zmax) atomicMin(&sh.found, j);
    __syncthreads();
    token = sh.found;
  } else {
    const double u = uniform_from_counter(sp.seed, streams[i], step);
    const double inv_t = 1.0 / sp.temperature;
    const bool filtered = (sp.top_k > 0 && sp.top_k < vocab) || sp.top_p < 1.f;
    if (!filtered) {
      auto w = [&](int j) { return exp(static_cast<double>(z[j] - zmax) * inv_t); };
      const double total = sum_weights(sh, vocab, w);
      const int hit = first_crossing(sh, vocab, w, u * total, true);
      token = hit < 0 ? vocab - 1 : hit;
    } else {
      const float* zs = sorted_z + i * vocab;
      const int32_t* idx = sorted_idx + i * vocab;
      auto w = [&](int j) { return exp(static_cast<double>(zs[j] - zmax) * inv_t); };
      const int k = sp.top_k > 0 ? min(sp.top_k, vocab) : vocab;
      int keep = k;
      if (sp.top_p < 1.f) {
        const double total = sum_weights(sh, k, w);
        const int cut = first_crossing(sh, k, w, static_cast<double>(sp.top_p) * total, false);
        if (cut >= 0) keep = cut + 1;
      }
      // The kept tokens are the first `keep` in candidate order (descending logit, lower id
      // first on ties: a total order), so token j is kept when it does not come after the last
      // kept one. The draw then runs over token ids in ascending order, as the CPU's does.
      const float cut_z = zs[keep - 1];
      const int cut_id = idx[keep - 1];
      auto kept_w = [&](int j) {
        const float zj = z[j];
        return zj > cut_z || (zj == cut_z && j <= cut_id) ? exp(static_cast<double>(zj - zmax) * inv_t) : 0.0;
      };
      const double kept = sum_weights(sh, vocab, kept_w);
      const int hit = first_crossing(sh, vocab, kept_w, u * kept, true);
      token = hit < 0 ? cut_id : hit;
    }
  }
  if (threadIdx.x == 0) {
    tokens[i] = token;
    logp[i] = static_cast<float>(static_cast<double>(z[token] - zmax) - log(norm));
  }
}

__global__ void gather_rows_kernel(const bf16* __restrict__ hidden, const int32_t* __restrict__ rows, int64_t dim,
                                   bf16* __restrict__ H) {
  const int64_t r = blockIdx.x;
  const bf16* src = hidden + static_cast<int64_t>(rows[r]) * dim;
  for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) H[r * dim + j] = src[j];
}

// z <- cap tanh(z / cap): Gemma 2's final logit soft-cap (SampleParams::logit_softcap).
__global__ void softcap_logits_kernel(float* __restrict__ Z, int64_t count, float cap) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count; i += int64_t{gridDim.x} * blockDim.x)
    Z[i] = cap * tanhf(Z[i] / cap);
}

// Segment offsets (i * vocab) and, per segment, the column indices 0 .. vocab-1.
__global__ void sort_inputs_kernel(int64_t rows, int vocab, int32_t* __restrict__ offsets, int32_t* __restrict__ idx) {
  const int64_t n = rows * vocab;
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < n; t += int64_t{gridDim.x} * blockDim.x) {
    idx[t] = static_cast<int32_t>(t % vocab);
    if (t % vocab == 0) offsets[t / vocab] = static_cast<int32_t>(t);
  }
  if (blockIdx.x == 0 && threadIdx.x == 0) offsets[rows] = static_cast<int32_t>(n);
}

}  // namespace

void sample(const Context& ctx, const bf16* hidden, const LinearWeight& head, const int32_t* rows, const uint64_t* streams,
            int64_t n, const SampleParams& params, uint64_t step, int32_t* tokens, float* logp) {
  if (n <= 0) return;
  const int64_t V = head.out, d = head.in;
  require(V < (int64_t{1} << 31) / 2, "sampling: vocabulary too large");
  const bool filtered = params.temperature > 0.f && ((params.top_k > 0 && params.top_k < V) || params.top_p < 1.f);
  const int64_t group = std::clamp<int64_t>(ctx.chunk_logits / V, 1, n);
  BufferPtr H = ctx.scratch(static_cast<size_t>(group * d) * sizeof(bf16), "sampling rows");
  BufferPtr Z = ctx.scratch(static_cast<size_t>(group * V) * sizeof(float), "sampling logits");
  BufferPtr sorted_z, idx_in, idx_out, offsets, temp;
  size_t temp_bytes = 0;
  if (filtered) {
    sorted_z = ctx.scratch(static_cast<size_t>(group * V) * sizeof(float), "sorted logits");
    idx_in = ctx.scratch(static_cast<size_t>(group * V) * sizeof(int32_t), "logit indices");
    idx_out = ctx.scratch(static_cast<size_t>(group * V) * sizeof(int32_t), "sorted logit indices");
    offsets = ctx.scratch(static_cast<size_t>(group + 1) * sizeof(int32_t), "sort segments");
    const int32_t* off = Context::ptr<int32_t>(offsets);
    DIFFUSE_CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortPairsDescending(
        nullptr, temp_bytes, Context::ptr<float>(Z), Context::ptr<float>(sorted_z), Context::ptr<int32_t>(idx_in),
        Context::ptr<int32_t>(idx_out), static_cast<int>(group * V), static_cast<int>(group), off, off + 1, 0,
        static_cast<int>(sizeof(float) * 8), ctx.stream));
    temp = ctx.scratch(std::max<size_t>(temp_bytes, 1), "sort workspace");
  }
  for (int64_t first = 0; first < n; first += group) {
    const int64_t b = std::min(group, n - first);
    gather_rows_kernel<<<static_cast<unsigned>(b), 128, 0, ctx.stream>>>(hidden, rows + first, d, Context::ptr<bf16>(H));
    DIFFUSE_LAUNCH_CHECK(gather_rows_kernel);
    gemm(ctx, b, V, d, {Context::ptr<bf16>(H), DType::BF16, d, false}, {act(head.w), DType::BF16, d, true},
         {Context::ptr<float>(Z), DType::F32, V}, 1.f, 0.f);
    if (params.logit_softcap > 0.f) {
      softcap_logits_kernel<<<grid_for(b * V, 256, ctx), 256, 0, ctx.stream>>>(Context::ptr<float>(Z), b * V, params.logit_softcap);
      DIFFUSE_LAUNCH_CHECK(softcap_logits_kernel);
    }
    if (filtered) {
      int32_t* off = Context::ptr<int32_t>(offsets);
      sort_inputs_kernel<<<grid_for(b * V, 256, ctx), 256, 0, ctx.stream>>>(b, static_cast<int>(V), off,
                                                                             Context::ptr<int32_t>(idx_in));
      DIFFUSE_LAUNCH_CHECK(sort_inputs_kernel);
      size_t bytes = temp_bytes;
      DIFFUSE_CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortPairsDescending(
          temp->data(), bytes, Context::ptr<float>(Z), Context::ptr<float>(sorted_z), Context::ptr<int32_t>(idx_in),
          Context::ptr<int32_t>(idx_out), static_cast<int>(b * V), static_cast<int>(b), off, off + 1, 0,
          static_cast<int>(sizeof(float) * 8), ctx.stream));
    }
    draw_kernel<<<static_cast<unsigned>(b), kThreads, 0, ctx.stream>>>(
        Context::ptr<float>(Z), static_cast<int>(V), filtered ? Context::ptr<float>(sorted_z) : nullptr,
        filtered ? Context::ptr<int32_t>(idx_out) : nullptr, params, streams + first, step, tokens + first, logp + first);
    DIFFUSE_LAUNCH_CHECK(draw_kernel);
  }
}

}  // namespace cuda
}  // namespace diffuse
