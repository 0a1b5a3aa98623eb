// Log-probabilities of trie edges through the frozen LM head, in vocabulary chunks, never
// materialising parents x vocab (the objectives' formulas are with Objective in backend.h):
//
//   forward, per chunk [v0, v0 + n) of the vocabulary:
//     Z = H head[v0:v0+n]^T            cuBLASLt, bf16 in, f32 out  [P x n]
//     online log-sum-exp of z (and of z / beta for GEM) per parent, z_y gathered per edge
//   then lse, log p_y = z_y - lse, and for GEM a second pass over the chunks for
//     C_e = sum_v q_v w_ev,  loss_e = sum_v q_v w_ev z_v - C_e z_y,  q = softmax(z / beta)
//
//   backward, per chunk: recompute Z; dz into bf16 (one block per parent, its child edges
//     from a CSR built on the device, the child columns formed in f32 before rounding);
//     dH += dZ head[v0:v0+n] (f32); finally dhidden[parent row] += dH.
//
// H [P x d] is the parents' rows gathered into one block. A chunk holds about
// ctx.chunk_logits logits (8M, 32 MiB of f32, by default), so memory is O(P d + budget) for
// any vocabulary. The head GEMMs are the cost; the rest is a few passes over the chunk.
//
// A logit soft-cap c (EdgeSet::logit_softcap, Gemma 2's final cap) turns each chunk into
// z = c tanh(z / c) right after its GEMM; the backward's dz then carries the factor
// 1 - (z / c)^2 = 1 - tanh^2 before its rounding to bf16.
#include <cub/block/block_scan.cuh>

#include "gemm.cuh"
#include "ops.cuh"

namespace diffuse {
namespace cuda {
namespace {

// Vocabulary columns per chunk: about ctx.chunk_logits logits, a multiple of 128, at least 256.
int64_t chunk_columns(const Context& ctx, int64_t parents, int64_t vocab) {
  const int64_t fit = ctx.chunk_logits / std::max<int64_t>(1, parents) / 128 * 128;
  return std::min(vocab, std::max<int64_t>(256, fit));
}

__device__ __forceinline__ float gem_weight(ObjectiveKind kind, float zv, float zy) {
  return kind == ObjectiveKind::GEM_LOGSIGMOID ? 1.f / (1.f + expf(-0.01f * (zv - zy))) : 1.f;
}

// H[p] = hidden[parent_rows[p]], a block per parent.
__global__ void gather_rows_kernel(const bf16* __restrict__ hidden, const int32_t* __restrict__ rows, int64_t dim,
                                   bf16* __restrict__ H) {
  const int64_t p = blockIdx.x;
  const bf16* src = hidden + static_cast<int64_t>(rows[p]) * dim;
  bf16* dst = H + p * dim;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) dst[i] = src[i];
}

// running[4p ..] = (max z, sum exp(z - max), max z/beta, sum exp(z/beta - max)).
__global__ void init_running_kernel(float* __restrict__ running, int64_t parents) {
  for (int64_t p = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; p < parents; p += int64_t{gridDim.x} * blockDim.x) {
    running[4 * p] = -INFINITY;
    running[4 * p + 1] = 0.f;
    running[4 * p + 2] = -INFINITY;
    running[4 * p + 3] = 0.f;
  }
}

// (m, s) pairs stand for s exp(m); merging keeps the larger exponent.
__device__ __forceinline__ void lse_merge(float& m, float& s, float m2, float s2) {
  const float mx = fmaxf(m, m2);
  if (mx == -INFINITY) return;
  s = s * expf(m - mx) + s2 * expf(m2 - mx);
  m = mx;
}

// Adds exp(x) to s exp(m), one exponential per element.
__device__ __forceinline__ void lse_add(float& m, float& s, float x) {
  if (x == -INFINITY) return;
  if (x <= m) {
    s += expf(x - m);
  } else {
    s = s * expf(m - x) + 1.f;
    m = x;
  }
}

// The block's log-sum-exp from every thread's (m, s): one max, then one sum.
__device__ __forceinline__ void block_lse(float& m, float& s, float* red) {
  const float mx = block_max(m, red);
  s = block_sum(m == -INFINITY ? 0.f : s * expf(m - mx), red);
  m = mx;
}

// Merges one chunk of a parent's logits into its running log-sum-exp (and that of z / beta
// for GEM); a block per parent, one pass over the chunk with an online (max, sum) per thread.
__global__ void lse_chunk_kernel(const float* __restrict__ Z, int64_t n, float* __restrict__ running, bool gem,
                                 float inv_beta) {
  __shared__ float red[32];
  const int64_t p = blockIdx.x;
  const float* z = Z + p * n;
  float m = -INFINITY, s = 0.f, mb = -INFINITY, sb = 0.f;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    lse_add(m, s, z[j]);
    if (gem) lse_add(mb, sb, z[j] * inv_beta);
  }
  block_lse(m, s, red);
  if (gem) block_lse(mb, sb, red);
  if (threadIdx.x == 0) {
    lse_merge(running[4 * p], running[4 * p + 1], m, s);
    if (gem) lse_merge(running[4 * p + 2], running[4 * p + 3], mb, sb);
  }
}

// z_y of every edge whose token falls in this chunk.
__global__ void gather_targets_kernel(const float* __restrict__ Z, int64_t n, int64_t v0,
                                      const int32_t* __restrict__ edge_parent, const int32_t* __restrict__ edge_token,
                                      int64_t edges, float* __restrict__ edge_stats) {
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < edges; e += int64_t{gridDim.x} * blockDim.x) {
    const int64_t y = edge_token[e] - v0;
    if (y >= 0 && y < n) edge_stats[e * kEdgeStats] = Z[static_cast<int64_t>(edge_parent[e]) * n + y];
  }
}

__global__ void finish_parents_kernel(const float* __restrict__ running, int64_t parents, bool gem,
                                      float* __restrict__ parent_stats) {
  for (int64_t p = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; p < parents; p += int64_t{gridDim.x} * blockDim.x) {
    parent_stats[p * kLogprobStats] = running[4 * p] + logf(running[4 * p + 1]);
    parent_stats[p * kLogprobStats + 1] = gem ? running[4 * p + 2] + logf(running[4 * p + 3]) : 0.f;
  }
}

__global__ void finish_edges_kernel(const int32_t* __restrict__ edge_parent, int64_t edges,
                                    const float* __restrict__ parent_stats, float* __restrict__ edge_stats,
                                    float* __restrict__ edge_logp, float* __restrict__ edge_loss) {
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < edges; e += int64_t{gridDim.x} * blockDim.x) {
    const float logp = edge_stats[e * kEdgeStats] - parent_stats[static_cast<int64_t>(edge_parent[e]) * kLogprobStats];
    edge_stats[e * kEdgeStats + 1] = 1.f;
    edge_logp[e] = logp;
    edge_loss[e] = -logp;
  }
}

// GEM: sums[2e] += sum_v q_v w_ev and sums[2e+1] += sum_v q_v w_ev z_v over this chunk; a
// block per edge.
__global__ void gem_sums_kernel(const float* __restrict__ Z, int64_t n, const int32_t* __restrict__ edge_parent,
                                const float* __restrict__ edge_stats, const float* __restrict__ parent_stats,
                                ObjectiveKind kind, float inv_beta, float* __restrict__ sums) {
  __shared__ float red[32];
  const int64_t e = blockIdx.x;
  const int64_t p = edge_parent[e];
  const float* z = Z + p * n;
  const float zy = edge_stats[e * kEdgeStats];
  const float lse_b = parent_stats[p * kLogprobStats + 1];
  float sc = 0.f, scz = 0.f;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    const float c = expf(z[j] * inv_beta - lse_b) * gem_weight(kind, z[j], zy);
    sc += c;
    scz += c * z[j];
  }
  sc = block_sum(sc, red);
  scz = block_sum(scz, red);
  if (threadIdx.x == 0) {
    sums[2 * e] += sc;
    sums[2 * e + 1] += scz;
  }
}

__global__ void finish_gem_kernel(const float* __restrict__ sums, int64_t edges, float* __restrict__ edge_stats,
                                  float* __restrict__ edge_loss) {
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < edges; e += int64_t{gridDim.x} * blockDim.x) {
    edge_stats[e * kEdgeStats + 1] = sums[2 * e];
    edge_loss[e] = sums[2 * e + 1] - sums[2 * e] * edge_stats[e * kEdgeStats];
  }
}

// ---------------------------------------------------------------- child lists (CSR by parent)
__global__ void count_children_kernel(const int32_t* __restrict__ edge_parent, int64_t edges, int32_t* __restrict__ counts) {
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < edges; e += int64_t{gridDim.x} * blockDim.x)
    atomicAdd(&counts[edge_parent[e]], 1);
}

constexpr int kScanThreads = 1024;
// offsets[0..n] = exclusive prefix sums of counts; one block.
__global__ void __launch_bounds__(kScanThreads) exclusive_scan_kernel(const int32_t* __restrict__ counts, int64_t n, int32_t* __restrict__ offsets) {
  using Scan = cub::BlockScan<int32_t, kScanThreads>;
  __shared__ typename Scan::TempStorage temp;
  __shared__ int32_t carry;
  if (threadIdx.x == 0) carry = 0;
  __syncthreads();
  for (int64_t base = 0; base < n; base += kScanThreads) {
    const int64_t i = base + threadIdx.x;
    int32_t before = 0, total = 0;
    Scan(temp).ExclusiveSum(i < n ? counts[i] : 0, before, total);
    if (i < n) offsets[i] = carry + before;
    __syncthreads();
    if (threadIdx.x == 0) carry += total;
    __syncthreads();
  }
  if (threadIdx.x == 0) offsets[n] = carry;
}

__global__ void fill_children_kernel(const int32_t* __restrict__ edge_parent, int64_t edges,
                                     const int32_t* __restrict__ offsets, int32_t* __restrict__ cursor,
                                     int32_t* __restrict__ children) {
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < edges; e += int64_t{gridDim.x} * blockDim.x) {
    const int32_t p = edge_parent[e];
    children[offsets[p] + atomicAdd(&cursor[p], 1)] = static_cast<int32_t>(e);
  }
}

// dz for one parent's row of the chunk, from its f32 logits Z into dZ (bf16):
//   CE:   dz = W_out softmax(z) - sum_c W_c e_yc
//   GEM:  dz_v = sum_c W_c q_v w_cv - sum_c W_c C_c e_yc,   q = softmax(z / beta)
// The first pass writes the softmax part of every column; then the columns of the parent's
// child tokens are recomputed in f32 with their e_y terms, so the cancellation there happens
// before the rounding. A block per parent.
__device__ __forceinline__ float dz_smooth(float zj, ObjectiveKind kind, float w_out, float lse, float lse_b, float inv_beta,
                                           int32_t c0, int32_t c1, const int32_t* children, const float* edge_weight,
                                           const float* edge_stats) {
  if (kind == ObjectiveKind::CE) return w_out * expf(zj - lse);
  if (kind == ObjectiveKind::GEM_LINEAR) return w_out * expf(zj * inv_beta - lse_b);
  float weighted = 0.f;
  for (int32_t c = c0; c < c1; ++c) {
    const int32_t e = children[c];
    weighted += edge_weight[e] * gem_weight(kind, zj, edge_stats[e * kEdgeStats]);
  }
  return expf(zj * inv_beta - lse_b) * weighted;
}

// z <- cap tanh(z / cap) over a chunk of logits.
__global__ void softcap_kernel(float* __restrict__ Z, int64_t count, float cap) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count; i += int64_t{gridDim.x} * blockDim.x)
    Z[i] = cap * tanhf(Z[i] / cap);
}

// d(capped z)/d(raw z) from the capped value: 1 - tanh^2; 1 without a cap.
__device__ __forceinline__ float cap_slope(float z, float cap) {
  if (cap <= 0.f) return 1.f;
  const float t = z / cap;
  return 1.f - t * t;
}

__global__ void dz_kernel(const float* __restrict__ Z, bf16* __restrict__ dZ, int64_t n, int64_t v0,
                          const int32_t* __restrict__ offsets, const int32_t* __restrict__ children,
                          const int32_t* __restrict__ edge_token, const float* __restrict__ edge_weight,
                          const float* __restrict__ edge_stats, const float* __restrict__ parent_stats, ObjectiveKind kind,
                          float inv_beta, float softcap) {
  __shared__ float red[32];
  const int64_t p = blockIdx.x;
  const float* z = Z + p * n;
  bf16* dz = dZ + p * n;
  const int32_t c0 = offsets[p], c1 = offsets[p + 1];
  float w_out = 0.f;
  for (int32_t c = c0 + threadIdx.x; c < c1; c += blockDim.x) w_out += edge_weight[children[c]];
  w_out = block_sum(w_out, red);
  const float lse = parent_stats[p * kLogprobStats], lse_b = parent_stats[p * kLogprobStats + 1];
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x)
    dz[j] = to_bf(dz_smooth(z[j], kind, w_out, lse, lse_b, inv_beta, c0, c1, children, edge_weight, edge_stats) *
                  cap_slope(z[j], softcap));
  __syncthreads();
  // Child tokens in this chunk: the first child naming a token rewrites its column with every
  // child's e_y term for that token (a trie has one child per token; the ops allow repeats).
  for (int32_t c = c0 + threadIdx.x; c < c1; c += blockDim.x) {
    const int32_t token = edge_token[children[c]];
    const int64_t y = token - v0;
    if (y < 0 || y >= n) continue;
    bool first = true;
    for (int32_t o = c0; o < c && first; ++o) first = edge_token[children[o]] != token;
    if (!first) continue;
    float d = dz_smooth(z[y], kind, w_out, lse, lse_b, inv_beta, c0, c1, children, edge_weight, edge_stats);
    for (int32_t o = c; o < c1; ++o) {
      const int32_t e = children[o];
      if (edge_token[e] == token) d -= edge_weight[e] * (kind == ObjectiveKind::CE ? 1.f : edge_stats[e * kEdgeStats + 1]);
    }
    dz[y] = to_bf(d * cap_slope(z[y], softcap));
  }
}

// dhidden[parent_rows[p]] += dH[p]; parent rows are distinct, so no two blocks meet.
__global__ void scatter_add_kernel(const float* __restrict__ dH, const int32_t* __restrict__ rows, int64_t dim,
                                   bf16* __restrict__ dhidden) {
  const int64_t p = blockIdx.x;
  bf16* dst = dhidden + static_cast<int64_t>(rows[p]) * dim;
  const float* src = dH + p * dim;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) dst[i] = to_bf(to_f(dst[i]) + src[i]);
}

struct Prepared {
  int64_t P, E, V, d, Vc;
  const bf16* head;
  BufferPtr H, Z;
};

Prepared prepare(const Context& ctx, const bf16* hidden, const LinearWeight& head, const EdgeSet& edges) {
  Prepared s{edges.n_parents, edges.n_edges, head.out, head.in, 0, act(head.w), nullptr, nullptr};
  s.Vc = chunk_columns(ctx, s.P, s.V);
  s.H = ctx.scratch(static_cast<size_t>(s.P * s.d) * sizeof(bf16), "log-prob parent rows");
  gather_rows_kernel<<<static_cast<unsigned>(s.P), 128, 0, ctx.stream>>>(hidden, edges.parent_rows, s.d,
                                                                         Context::ptr<bf16>(s.H));
  DIFFUSE_LAUNCH_CHECK(gather_rows_kernel);
  s.Z = ctx.scratch(static_cast<size_t>(s.P * s.Vc) * sizeof(float), "log-prob logits chunk");
  return s;
}

// Z = H head[v0 : v0 + n]^T, soft-capped when softcap > 0.
void chunk_logits(const Context& ctx, const Prepared& s, int64_t v0, int64_t n, float softcap = 0.f) {
  gemm(ctx, s.P, n, s.d, {Context::ptr<bf16>(s.H), DType::BF16, s.d, false}, {s.head + v0 * s.d, DType::BF16, s.d, true},
       {Context::ptr<float>(s.Z), DType::F32, n}, 1.f, 0.f);
  if (softcap > 0.f) {
    softcap_kernel<<<grid_for(s.P * n, 256, ctx), 256, 0, ctx.stream>>>(Context::ptr<float>(s.Z), s.P * n, softcap);
    DIFFUSE_LAUNCH_CHECK(softcap_kernel);
  }
}

}  // namespace

void logprobs_forward(const Context& ctx, const bf16* hidden, const LinearWeight& head, const EdgeSet& edges,
                      const Objective& objective, float* edge_logp, float* edge_loss, float* parent_stats,
                      float* edge_stats) {
  if (edges.n_parents <= 0 || edges.n_edges <= 0) return;
  const Prepared s = prepare(ctx, hidden, head, edges);
  const bool gem = objective.kind != ObjectiveKind::CE;
  const float inv_beta = 1.f / objective.beta;
  float* Z = Context::ptr<float>(s.Z);
  BufferPtr running = ctx.scratch(4 * sizeof(float) * s.P, "log-sum-exp running statistics");
  float* run = Context::ptr<float>(running);
  init_running_kernel<<<grid_for(s.P, 256, ctx), 256, 0, ctx.stream>>>(run, s.P);
  DIFFUSE_LAUNCH_CHECK(init_running_kernel);
  for (int64_t v0 = 0; v0 < s.V; v0 += s.Vc) {
    const int64_t n = std::min(s.Vc, s.V - v0);
    chunk_logits(ctx, s, v0, n, edges.logit_softcap);
    lse_chunk_kernel<<<static_cast<unsigned>(s.P), 256, 0, ctx.stream>>>(Z, n, run, gem, inv_beta);
    DIFFUSE_LAUNCH_CHECK(lse_chunk_kernel);
    gather_targets_kernel<<<grid_for(s.E, 256, ctx), 256, 0, ctx.stream>>>(Z, n, v0, edges.edge_parent, edges.edge_token,
                                                                            s.E, edge_stats);
    DIFFUSE_LAUNCH_CHECK(gather_targets_kernel);
  }
  finish_parents_kernel<<<grid_for(s.P, 256, ctx), 256, 0, ctx.stream>>>(run, s.P, gem, parent_stats);
  DIFFUSE_LAUNCH_CHECK(finish_parents_kernel);
  finish_edges_kernel<<<grid_for(s.E, 256, ctx), 256, 0, ctx.stream>>>(edges.edge_parent, s.E, parent_stats, edge_stats,
                                                                        edge_logp, edge_loss);
  DIFFUSE_LAUNCH_CHECK(finish_edges_kernel);
  if (!gem) return;

  BufferPtr sums_buf = ctx.scratch(2 * sizeof(float) * s.E, "GEM per-edge sums");
  float* sums = Context::ptr<float>(sums_buf);
  DIFFUSE_CUDA_CHECK(cudaMemsetAsync(sums, 0, 2 * sizeof(float) * s.E, ctx.stream));
  for (int64_t v0 = 0; v0 < s.V; v0 += s.Vc) {
    const int64_t n = std::min(s.Vc, s.V - v0);
    chunk_logits(ctx, s, v0, n, edges.logit_softcap);
    gem_sums_kernel<<<static_cast<unsigned>(s.E), 256, 0, ctx.stream>>>(Z, n, edges.edge_parent, edge_stats, parent_stats,
                                                                         objective.kind, inv_beta, sums);
    DIFFUSE_LAUNCH_CHECK(gem_sums_kernel);
  }
  finish_gem_kernel<<<grid_for(s.E, 256, ctx), 256, 0, ctx.stream>>>(sums, s.E, edge_stats, edge_loss);
  DIFFUSE_LAUNCH_CHECK(finish_gem_kernel);
}

void logprobs_backward(const Context& ctx, const bf16* hidden, const LinearWeight& head, const EdgeSet& edges,
                       const Objective& objective, const float* parent_stats, const float* edge_stats, bf16* dhidden) {
  if (edges.n_parents <= 0 || edges.n_edges <= 0) return;
  require(edges.edge_weight != nullptr, "log-prob backward: edge weights are required");
  const Prepared s = prepare(ctx, hidden, head, edges);
  float* Z = Context::ptr<float>(s.Z);

  // Child lists: offsets [P + 1], then the edges grouped by parent.
  BufferPtr csr = ctx.scratch(sizeof(int32_t) * (2 * s.P + 1 + s.E), "log-prob child lists");
  int32_t* counts = Context::ptr<int32_t>(csr);
  int32_t* offsets = counts + s.P;
  int32_t* children = offsets + s.P + 1;
  DIFFUSE_CUDA_CHECK(cudaMemsetAsync(counts, 0, sizeof(int32_t) * s.P, ctx.stream));
  count_children_kernel<<<grid_for(s.E, 256, ctx), 256, 0, ctx.stream>>>(edges.edge_parent, s.E, counts);
  DIFFUSE_LAUNCH_CHECK(count_children_kernel);
  exclusive_scan_kernel<<<1, kScanThreads, 0, ctx.stream>>>(counts, s.P, offsets);
  DIFFUSE_LAUNCH_CHECK(exclusive_scan_kernel);
  DIFFUSE_CUDA_CHECK(cudaMemsetAsync(counts, 0, sizeof(int32_t) * s.P, ctx.stream));
  fill_children_kernel<<<grid_for(s.E, 256, ctx), 256, 0, ctx.stream>>>(edges.edge_parent, s.E, offsets, counts, children);
  DIFFUSE_LAUNCH_CHECK(fill_children_kernel);

  BufferPtr dZ_buf = ctx.scratch(static_cast<size_t>(s.P * s.Vc) * sizeof(bf16), "log-prob logit gradients");
  BufferPtr dH_buf = ctx.scratch(static_cast<size_t>(s.P * s.d) * sizeof(float), "log-prob hidden gradients");
  bf16* dZ = Context::ptr<bf16>(dZ_buf);
  float* dH = Context::ptr<float>(dH_buf);
  for (int64_t v0 = 0; v0 < s.V; v0 += s.Vc) {
    const int64_t n = std::min(s.Vc, s.V - v0);
    chunk_logits(ctx, s, v0, n, edges.logit_softcap);
    dz_kernel<<<static_cast<unsigned>(s.P), 256, 0, ctx.stream>>>(Z, dZ, n, v0, offsets, children, edges.edge_token,
                                                                   edges.edge_weight, edge_stats, parent_stats, objective.kind,
                                                                   1.f / objective.beta, edges.logit_softcap);
    DIFFUSE_LAUNCH_CHECK(dz_kernel);
    // dH (+)= dZ head[v0 : v0 + n]: head rows are already [K x N] = [n x d].
    gemm(ctx, s.P, s.d, n, {dZ, DType::BF16, n, false}, {s.head + v0 * s.d, DType::BF16, s.d, false}, {dH, DType::F32, s.d}, 1.f,
         v0 == 0 ? 0.f : 1.f);
  }
  scatter_add_kernel<<<static_cast<unsigned>(s.P), 128, 0, ctx.stream>>>(dH, edges.parent_rows, s.d, dhidden);
  DIFFUSE_LAUNCH_CHECK(scatter_add_kernel);
}

}  // namespace cuda
}  // namespace diffuse
