#include "cpu/logprobs.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "cpu/gemm.h"
#include "cpu/lora_linear.h"
#include "cpu/simd.h"
#include "cpu/thread_pool.h"

namespace diffuse {
namespace {

// Vocabulary columns per chunk. One task computes the logits of every parent for one chunk (a
// single-threaded GEMM into a [parents x cols] block) and reduces them while they are in cache;
// the block and the head's [cols x dim] slice together stay near 1 MiB, so the backward's second
// GEMM reads the slice from L2 again rather than from memory. At least four chunks per thread.
int64_t chunk_columns(int64_t parents, int64_t vocab, int64_t dim) {
  const int64_t threads = thread_count();
  int64_t cols = std::clamp<int64_t>((int64_t{1} << 18) / (parents + dim), 256, 4096);
  cols = std::min(cols, std::max<int64_t>(256, (vocab + 4 * threads - 1) / (4 * threads)));
  return (cols + 15) / 16 * 16;
}

// The parents' hidden rows gathered into one contiguous block [n_parents x dim].
std::vector<float> gather_parents(const float* hidden, int64_t dim, const EdgeSet& edges) {
  std::vector<float> H(static_cast<size_t>(edges.n_parents) * dim);
  for (int32_t p = 0; p < edges.n_parents; ++p)
    std::copy_n(hidden + static_cast<int64_t>(edges.parent_rows[p]) * dim, dim, H.data() + p * dim);
  return H;
}

// Edges grouped by parent (CSR over edge_parent).
struct ChildLists {
  std::vector<int32_t> offsets, edges;
};
ChildLists child_lists(const EdgeSet& e) {
  ChildLists c;
  c.offsets.assign(e.n_parents + 1, 0);
  for (int32_t i = 0; i < e.n_edges; ++i) ++c.offsets[e.edge_parent[i] + 1];
  for (int32_t p = 0; p < e.n_parents; ++p) c.offsets[p + 1] += c.offsets[p];
  c.edges.resize(e.n_edges);
  std::vector<int32_t> fill(c.offsets.begin(), c.offsets.end() - 1);
  for (int32_t i = 0; i < e.n_edges; ++i) c.edges[fill[e.edge_parent[i]]++] = i;
  return c;
}

// z <- cap tanh(z / cap) over n logits (Gemma 2's final soft-cap), keeping the tanh values in
// `tanhs` when given (for the backward's factor 1 - tanh^2).
void softcap_logits(float* z, int64_t n, float cap, float* tanhs) {
  for (int64_t i = 0; i < n; ++i) {
    const float t = std::tanh(z[i] / cap);
    if (tanhs) tanhs[i] = t;
    z[i] = cap * t;
  }
}

// ------------------------------------------------------------------ forward, one chunk
// Per parent p of a chunk of n logits: mx = max z, se = sum e^(z - mx); for GEM, with
// q~ = e^((z - mx) / beta): sq = sum q~, and either sqz = sum q~ z (linear) or, per child edge
// e with target logit zy, ec = sum q~ w, ecz = sum q~ w z with w = sigmoid(0.01 (z - zy)).
struct ForwardChunk {
  const float* Z;
  int64_t n;
  ObjectiveKind kind;
  float inv_beta;
  const ChildLists* kids;
  const float* edge_stats;  // z_y at [e * kEdgeStats]
  float *mx, *se, *sq, *sqz;  // [n_parents] of this chunk
  float *ec, *ecz;            // [n_edges] of this chunk
  float* q;                   // scratch [n]
};

template <int W>
DIFFUSE_INLINE void forward_chunk_body(const ForwardChunk& a, int64_t begin, int64_t end) {
  using V = simd::vf<W>;
  const int64_t n = a.n;
  for (int64_t p = begin; p < end; ++p) {
    const float* z = a.Z + p * n;
    const float m = simd::max_of<W>(z, n);
    V se{}, sq{}, sqz{};
    int64_t j = 0;
    for (; j + W <= n; j += W) {
      const V zj = simd::load<V>(z + j);
      se += simd::exp(zj - m);
      if (a.kind != ObjectiveKind::CE) {
        const V qj = simd::exp((zj - m) * a.inv_beta);
        sq += qj;
        sqz += qj * zj;
        simd::store(a.q + j, qj);
      }
    }
    if (j < n) {  // tail: pad with the max (finite), then mask
      const V mask = simd::first_lanes<V>(n - j);
      const V zj = simd::load_partial<V>(z + j, n - j, m);
      se += simd::exp(zj - m) * mask;
      if (a.kind != ObjectiveKind::CE) {
        const V qj = simd::exp((zj - m) * a.inv_beta) * mask;
        sq += qj;
        sqz += qj * zj;
        simd::store_partial(a.q + j, qj, n - j);
      }
    }
    a.mx[p] = m;
    a.se[p] = simd::reduce_add(se);
    if (a.kind == ObjectiveKind::CE) continue;
    a.sq[p] = simd::reduce_add(sq);
    a.sqz[p] = simd::reduce_add(sqz);
    if (a.kind != ObjectiveKind::GEM_LOGSIGMOID) continue;
    for (int32_t c = a.kids->offsets[p]; c < a.kids->offsets[p + 1]; ++c) {
      const int32_t e = a.kids->edges[c];
      const float zy = a.edge_stats[e * kEdgeStats];
      V s{}, sz{};
      for (j = 0; j + W <= n; j += W) {
        const V zj = simd::load<V>(z + j);
        const V cw = simd::load<V>(a.q + j) * simd::sigmoid((zj - zy) * 0.01f);
        s += cw;
        sz += cw * zj;
      }
      if (j < n) {
        const V zj = simd::load_partial<V>(z + j, n - j, 0.f);
        const V cw = simd::load_partial<V>(a.q + j, n - j, 0.f) * simd::sigmoid((zj - zy) * 0.01f);
        s += cw;
        sz += cw * zj;
      }
      a.ec[e] = simd::reduce_add(s);
      a.ecz[e] = simd::reduce_add(sz);
    }
  }
}
DIFFUSE_SIMD_CLONES(void, forward_chunk, forward_chunk_body, (const ForwardChunk& a, int64_t begin, int64_t end),
                    (a, begin, end))

// ------------------------------------------------------------------ backward, one chunk
// Overwrites the chunk's logits Z with dz (see Objective in engine/backend.h):
//   CE:             dz = W_out softmax(z) - sum_e W_e e_y
//   GEM linear:     dz = W_out q - sum_e W_e C_e e_y,                 q = softmax(z / beta)
//   GEM logsigmoid: dz = q sum_e W_e sigmoid(0.01 (z - z_ye)) - sum_e W_e C_e e_y
struct BackwardChunk {
  float* Z;
  int64_t n, v0;
  ObjectiveKind kind;
  float inv_beta;
  const ChildLists* kids;
  const EdgeSet* edges;
  const float* parent_stats;
  const float* edge_stats;
  const float* w_out;
};

template <int W>
DIFFUSE_INLINE void backward_chunk_body(const BackwardChunk& a, int64_t begin, int64_t end) {
  using V = simd::vf<W>;
  const int64_t n = a.n;
  const bool ce = a.kind == ObjectiveKind::CE;
  for (int64_t p = begin; p < end; ++p) {
    float* z = a.Z + p * n;
    const float lse = a.parent_stats[p * kLogprobStats + (ce ? 0 : 1)];
    const float scale = ce ? 1.f : a.inv_beta;
    const int32_t k0 = a.kids->offsets[p], k1 = a.kids->offsets[p + 1];
    if (a.kind != ObjectiveKind::GEM_LOGSIGMOID) {
      const float w = a.w_out[p];
      int64_t j = 0;
      for (; j + W <= n; j += W) simd::store(z + j, w * simd::exp(simd::load<V>(z + j) * scale - lse));
      if (j < n) simd::store_partial(z + j, w * simd::exp(simd::load_partial<V>(z + j, n - j, 0.f) * scale - lse), n - j);
    } else {
      int64_t j = 0;
      for (; j < n; j += W) {
        const bool full = j + W <= n;
        const V zj = full ? simd::load<V>(z + j) : simd::load_partial<V>(z + j, n - j, 0.f);
        V acc{};
        for (int32_t c = k0; c < k1; ++c) {
          const int32_t e = a.kids->edges[c];
          acc += a.edges->edge_weight[e] * simd::sigmoid((zj - a.edge_stats[e * kEdgeStats]) * 0.01f);
        }
        const V dz = simd::exp(zj * scale - lse) * acc;
        if (full) simd::store(z + j, dz);
        else simd::store_partial(z + j, dz, n - j);
      }
    }
    for (int32_t c = k0; c < k1; ++c) {
      const int32_t e = a.kids->edges[c];
      const int64_t y = a.edges->edge_token[e] - a.v0;
      if (y >= 0 && y < n) z[y] -= a.edges->edge_weight[e] * a.edge_stats[e * kEdgeStats + 1];
    }
  }
}
DIFFUSE_SIMD_CLONES(void, backward_chunk, backward_chunk_body, (const BackwardChunk& a, int64_t begin, int64_t end),
                    (a, begin, end))

}  // namespace

void logprobs_forward(const float* hidden, int64_t dim, const LinearWeight& head,
                      const EdgeSet& edges, const Objective& objective, float* edge_logp,
                      float* edge_loss, float* parent_stats, float* edge_stats) {
  const int64_t P = edges.n_parents, E = edges.n_edges, V = head.out;
  if (P == 0) return;
  const StoredMatrix Wh = stored_matrix(head);
  const std::vector<float> H = gather_parents(hidden, dim, edges);
  const ChildLists kids = child_lists(edges);
  const bool gem = objective.kind != ObjectiveKind::CE;
  const double beta = objective.beta;

  // Target logits z_y, one dot product per edge (GEM's weights need them in the chunk pass).
  parallel_for(E, 64, [&](int64_t begin, int64_t end) {
    std::vector<float> row(static_cast<size_t>(dim));
    for (int64_t e = begin; e < end; ++e) {
      const float* h = H.data() + static_cast<int64_t>(edges.edge_parent[e]) * dim;
      const float* w = row.data();
      widen_range(Wh.type, Wh.rows_from(edges.edge_token[e]).data, 0, dim, row.data());
      double zy = 0;
      for (int64_t d = 0; d < dim; ++d) zy += static_cast<double>(h[d]) * w[d];
      edge_stats[e * kEdgeStats] = edges.logit_softcap > 0 ? static_cast<float>(edges.logit_softcap * std::tanh(zy / edges.logit_softcap)) : static_cast<float>(zy);
    }
  });

  // One pass over the vocabulary: per-chunk statistics, combined in chunk order below.
  const int64_t cols = chunk_columns(P, V, dim), chunks = (V + cols - 1) / cols;
  std::vector<float> mx(chunks * P), se(chunks * P);
  std::vector<float> sq(gem ? chunks * P : 0), sqz(gem ? chunks * P : 0);
  const bool per_edge = objective.kind == ObjectiveKind::GEM_LOGSIGMOID;
  std::vector<float> ec(per_edge ? chunks * E : 0), ecz(per_edge ? chunks * E : 0);
  parallel_tasks(chunks, [&](int64_t c) {
    const int64_t v0 = c * cols, n = std::min(cols, V - v0);
    std::vector<float> Z(static_cast<size_t>(P) * n), q(gem ? n : 0);
    sgemm_nt(P, n, dim, H.data(), dim, Wh.rows_from(v0), 0.f, Z.data(), n);
    if (edges.logit_softcap > 0) softcap_logits(Z.data(), P * n, edges.logit_softcap, nullptr);
    ForwardChunk a{Z.data(), n, objective.kind, 1.f / objective.beta, &kids, edge_stats,
                   mx.data() + c * P, se.data() + c * P, gem ? sq.data() + c * P : nullptr,
                   gem ? sqz.data() + c * P : nullptr, per_edge ? ec.data() + c * E : nullptr,
                   per_edge ? ecz.data() + c * E : nullptr, q.data()};
    forward_chunk(a, 0, P);
  });

  std::vector<double> chunk_scale(chunks);  // e^((mx_c - M) / beta) of the current parent
  for (int64_t p = 0; p < P; ++p) {
    double M = -std::numeric_limits<double>::infinity();
    for (int64_t c = 0; c < chunks; ++c) M = std::max(M, static_cast<double>(mx[c * P + p]));
    double S = 0;
    for (int64_t c = 0; c < chunks; ++c) S += se[c * P + p] * std::exp(mx[c * P + p] - M);
    const double lse = M + std::log(S);
    parent_stats[p * kLogprobStats] = static_cast<float>(lse);
    parent_stats[p * kLogprobStats + 1] = 0.f;
    for (int32_t k = kids.offsets[p]; k < kids.offsets[p + 1]; ++k) {
      const int32_t e = kids.edges[k];
      edge_logp[e] = static_cast<float>(edge_stats[e * kEdgeStats] - lse);
      edge_loss[e] = -edge_logp[e];
      edge_stats[e * kEdgeStats + 1] = 1.f;
    }
    if (!gem) continue;
    double Sb = 0, SbZ = 0;
    for (int64_t c = 0; c < chunks; ++c) {
      chunk_scale[c] = std::exp((mx[c * P + p] - M) / beta);
      Sb += sq[c * P + p] * chunk_scale[c];
      SbZ += sqz[c * P + p] * chunk_scale[c];
    }
    parent_stats[p * kLogprobStats + 1] = static_cast<float>(M / beta + std::log(Sb));
    for (int32_t k = kids.offsets[p]; k < kids.offsets[p + 1]; ++k) {
      const int32_t e = kids.edges[k];
      double C = 1, CZ = SbZ / Sb;
      if (per_edge) {
        C = CZ = 0;
        for (int64_t c = 0; c < chunks; ++c) {
          C += ec[c * E + e] * chunk_scale[c];
          CZ += ecz[c * E + e] * chunk_scale[c];
        }
        C /= Sb, CZ /= Sb;
      }
      edge_stats[e * kEdgeStats + 1] = static_cast<float>(C);
      edge_loss[e] = static_cast<float>(CZ - C * edge_stats[e * kEdgeStats]);
    }
  }
}

uint64_t logprobs_scratch_bytes(int64_t parents, int64_t edges, int64_t vocab, int64_t dim, bool backward) {
  if (parents == 0) return 0;
  const uint64_t P = static_cast<uint64_t>(parents), E = static_cast<uint64_t>(edges), threads = static_cast<uint64_t>(thread_count());
  const uint64_t cols = static_cast<uint64_t>(chunk_columns(parents, vocab, dim)), chunks = (static_cast<uint64_t>(vocab) + cols - 1) / cols;
  const uint64_t shared = P * dim + 2 * (P + 1) + 2 * E;  // H, the child lists (offsets, fill, edges)
  if (backward)
    return sizeof(float) * (shared + P + std::min<uint64_t>(threads, chunks) * (P * dim + 2 * P * cols));
  // Per chunk: mx, se, sq, sqz over parents and ec, ecz over edges (the GEM objectives');
  // per task: the chunk's logits and GEM's q; per edge task: one widened head row.
  return sizeof(float) * (shared + chunks * (4 * P + 2 * E) + threads * (P * cols + cols + dim) + chunks);
}

void logprobs_backward(const float* hidden, int64_t dim, const LinearWeight& head,
                       const EdgeSet& edges, const Objective& objective,
                       const float* parent_stats, const float* edge_stats, float* dhidden) {
  const int64_t P = edges.n_parents, V = head.out;
  if (P == 0) return;
  const StoredMatrix Wh = stored_matrix(head);
  const std::vector<float> H = gather_parents(hidden, dim, edges);
  const ChildLists kids = child_lists(edges);
  std::vector<float> w_out(P, 0.f);
  for (int32_t e = 0; e < edges.n_edges; ++e) w_out[edges.edge_parent[e]] += edges.edge_weight[e];

  // Each thread takes a fixed range of chunks and accumulates its own dH; the ranges are
  // summed in order, so the result does not depend on scheduling.
  const int64_t cols = chunk_columns(P, V, dim), chunks = (V + cols - 1) / cols;
  const int64_t groups = std::min<int64_t>(thread_count(), chunks);
  std::vector<float> dH(static_cast<size_t>(groups) * P * dim, 0.f);
  parallel_tasks(groups, [&](int64_t g) {
    const bool capped = edges.logit_softcap > 0;
    std::vector<float> Z(static_cast<size_t>(P) * cols), tanhs(capped ? Z.size() : 0);
    float* dHg = dH.data() + g * P * dim;
    for (int64_t c = chunks * g / groups; c < chunks * (g + 1) / groups; ++c) {
      const int64_t v0 = c * cols, n = std::min(cols, V - v0);
      sgemm_nt(P, n, dim, H.data(), dim, Wh.rows_from(v0), 0.f, Z.data(), n);
      if (capped) softcap_logits(Z.data(), P * n, edges.logit_softcap, tanhs.data());
      BackwardChunk a{Z.data(), n, v0, objective.kind, 1.f / objective.beta, &kids, &edges,
                      parent_stats, edge_stats, w_out.data()};
      backward_chunk(a, 0, P);
      if (capped)  // dz_raw = dz_capped (1 - tanh^2)
        for (int64_t i = 0; i < P * n; ++i) Z[i] *= 1.f - tanhs[i] * tanhs[i];
      sgemm_nn(P, dim, n, Z.data(), n, Wh.rows_from(v0), 1.f, dHg, dim);
    }
  });
  for (int64_t p = 0; p < P; ++p) {
    float* dst = dhidden + static_cast<int64_t>(edges.parent_rows[p]) * dim;
    for (int64_t g = 0; g < groups; ++g) {
      const float* src = dH.data() + (g * P + p) * dim;
      for (int64_t d = 0; d < dim; ++d) dst[d] += src[d];
    }
  }
}

}  // namespace diffuse
