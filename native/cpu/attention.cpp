#include "cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "cpu/simd.h"
#include "cpu/thread_pool.h"

// How the work is laid out. A task owns a block of query rows and one kv head. Within it, up to
// kMaxHeads q heads that read that kv head (GQA) and, when their key lists start with the same
// run of consecutive key rows (the prompt, which every trie row reads), kRowBlock query rows
// are processed together: each k / v row is then loaded once for up to 16 query vectors.
// Scores over a run of consecutive key rows come W keys at a time (the vector width: 16 with
// AVX-512) from k (and v) transposed into tiles of 16 rows: plain FMAs, no horizontal sums.
// Other keys are done one at a time. The backward is the same walk, adding dk / dv into a
// per-task copy (see attention_backward). Everything is compiled per instruction set at its
// width (simd.h). The kernels take head_dim as a multiple of 16; other head dims run on
// zero-padded copies.
namespace diffuse {
namespace {

constexpr int kTile = 16;          // rows per tile of the transposed k / v; head dims pad to it
constexpr int kMaxHeads = 4;       // q heads of one kv head processed together
constexpr int kRowBlock = 4;       // query rows processed together when they share a prefix
constexpr int32_t kMinRun = 6;     // consecutive keys worth the transposed tiles
constexpr int32_t kMinShared = 16; // shared prefix worth a row block

struct Geometry {
  int head_dim;
  int64_t q_stride, kv_stride;  // floats per row of q (and out) and of k (and v)
  float scale;
  int64_t tiles;  // 16-row tiles of the transposed k / v, 0 when there are none
};

// A block of R query rows times G heads. Row r reads keys[r][0 .. n[r]); the first `shared` of
// them are key rows r0, r0 + 1, ... in every row of the block.
template <int R>
struct RowSet {
  const float* q[R];     // row r's first head; its G heads are head_dim apart
  const float* dout[R];  // (backward)
  const int32_t* keys[R];
  int32_t n[R];
  float* s[R];   // row r's scores or probabilities [G][n[r]]
  float* ds[R];  // (backward) dp, then ds [G][n[r]]
  int32_t r0, shared;
};

// dst[r][t][j] = scale a_{r,t} . b_{r0 + j} for j in [0, L): key rows r0 .. r0 + L - 1, read by
// all R rows. From the first row that is a multiple of W on, they come W at a time from the
// tiles bt (when given and enough keys remain); before it, or without tiles, one at a time.
template <int W, int R, int G>
DIFFUSE_INLINE void run_dots(const float* const* a, const float* b, const float* bt, int32_t r0, int32_t L,
                             const Geometry& g, float scale, float* const* dst, const int32_t* ld) {
  using V = simd::vf<W>;
  const int hd = g.head_dim;
  const int32_t head = (W - r0 % W) % W;
  const int32_t tiled_from = bt != nullptr && L - head >= kMinRun ? head : L;
  int32_t j = 0;
  for (; j < tiled_from; ++j) {
    const float* bj = b + (r0 + j) * g.kv_stride;
    V acc[R][G];
    for (int r = 0; r < R; ++r)
      for (int t = 0; t < G; ++t) acc[r][t] = V{};
    for (int d = 0; d < hd; d += W) {
      const V bc = simd::load<V>(bj + d);
      for (int r = 0; r < R; ++r)
        for (int t = 0; t < G; ++t) acc[r][t] += simd::load<V>(a[r] + t * hd + d) * bc;
    }
    for (int r = 0; r < R; ++r)
      for (int t = 0; t < G; ++t) dst[r][t * ld[r] + j] = simd::reduce_add(acc[r][t]) * scale;
  }
  // W keys at a time from their tile (key rows r0 + j .. r0 + j + W - 1, W-aligned). Few query
  // vectors leave the FMAs latency-bound: then even and odd d accumulate apart.
  constexpr int U = R * G < 8 ? 2 : 1;
  for (; j < L; j += W) {
    const int64_t row = r0 + j;
    const float* sub = bt + (row / kTile) * hd * kTile + row % kTile;
    V acc[U][R][G];
    for (int u = 0; u < U; ++u)
      for (int r = 0; r < R; ++r)
        for (int t = 0; t < G; ++t) acc[u][r][t] = V{};
    for (int d = 0; d < hd; d += U)
      for (int u = 0; u < U; ++u) {
        const V bd = simd::load<V>(sub + (d + u) * kTile);
        for (int r = 0; r < R; ++r)
          for (int t = 0; t < G; ++t) acc[u][r][t] += a[r][t * hd + d + u] * bd;
      }
    const int32_t m = std::min<int32_t>(W, L - j);
    for (int r = 0; r < R; ++r)
      for (int t = 0; t < G; ++t) {
        V x = acc[0][r][t];
        for (int u = 1; u < U; ++u) x += acc[u][r][t];
        if (m == W) simd::store(dst[r] + t * ld[r] + j, x * scale);
        else simd::store_partial(dst[r] + t * ld[r] + j, x * scale, m);
      }
  }
}

// dst[t][j] = scale a_t . b_{keys[j]} for one row's list of n keys, in maximal runs of
// consecutive key rows.
template <int W, int G>
DIFFUSE_INLINE void list_dots(const float* a, const float* b, const float* bt, const int32_t* keys, int32_t n,
                              const Geometry& g, float scale, float* dst, int32_t ld) {
  for (int32_t j = 0; j < n;) {
    int32_t run = 1;
    while (j + run < n && keys[j + run] == keys[j] + run) ++run;
    float* d = dst + j;
    run_dots<W, 1, G>(&a, b, run >= kMinRun ? bt : nullptr, keys[j], run, g, scale, &d, &ld);
    j += run;
  }
}

// s[r][t][j] = scale a_{r,t} . b_{keys[r][j]} over every key of every row.
template <int W, int R, int G>
DIFFUSE_INLINE void block_dots(const RowSet<R>& rs, const float* const* a, const float* b, const float* bt,
                               const Geometry& g, float scale, float* const* dst) {
  run_dots<W, R, G>(a, b, bt, rs.r0, rs.shared, g, scale, dst, rs.n);
  for (int r = 0; r < R; ++r)
    list_dots<W, G>(a[r], b, bt, rs.keys[r] + rs.shared, rs.n[r] - rs.shared, g, scale, dst[r] + rs.shared, rs.n[r]);
}

// s[j] <- cap tanh(s[j] / cap): Gemma 2's attention logit soft-cap.
inline void softcap_scores(float* s, int32_t n, float cap) {
  for (int32_t j = 0; j < n; ++j) s[j] = cap * std::tanh(s[j] / cap);
}

// s[j] <- exp(s[j] - max s) in place; returns {max, sum of the exponentials}.
struct MaxSum {
  float max, sum;
};
template <int W>
DIFFUSE_INLINE MaxSum exp_shifted(float* s, int32_t n) {
  using V = simd::vf<W>;
  const float mx = simd::max_of<W>(s, n);
  V sum{};
  int32_t j = 0;
  for (; j + W <= n; j += W) {
    const V e = simd::exp(simd::load<V>(s + j) - mx);
    simd::store(s + j, e);
    sum += e;
  }
  if (j < n) {
    const V e = simd::exp(simd::load_partial<V>(s + j, n - j, -std::numeric_limits<float>::infinity()) - mx);
    simd::store_partial(s + j, e, n - j);
    sum += simd::load_partial<V>(s + j, n - j, 0.f);
  }
  return {mx, simd::reduce_add(sum)};
}

// out[r][t] = scale[r][t] sum_j w[r][t][j] v_{keys[r][j]}: the shared keys for all rows at once,
// then each row's own.
template <int W, int R, int G>
DIFFUSE_INLINE void weighted_sum(const RowSet<R>& rs, const float* v, const Geometry& g,
                                 const float (*scale)[G], float* const* out) {
  using V = simd::vf<W>;
  const int hd = g.head_dim;
  for (int d = 0; d < hd; d += W) {
    V acc[R][G];
    for (int r = 0; r < R; ++r)
      for (int t = 0; t < G; ++t) acc[r][t] = V{};
    for (int32_t j = 0; j < rs.shared; ++j) {
      const V vc = simd::load<V>(v + (rs.r0 + j) * g.kv_stride + d);
      for (int r = 0; r < R; ++r)
        for (int t = 0; t < G; ++t) acc[r][t] += rs.s[r][t * rs.n[r] + j] * vc;
    }
    for (int r = 0; r < R; ++r)
      for (int32_t j = rs.shared; j < rs.n[r]; ++j) {
        const V vc = simd::load<V>(v + rs.keys[r][j] * g.kv_stride + d);
        for (int t = 0; t < G; ++t) acc[r][t] += rs.s[r][t * rs.n[r] + j] * vc;
      }
    for (int r = 0; r < R; ++r)
      for (int t = 0; t < G; ++t) simd::store(out[r] + t * hd + d, acc[r][t] * scale[r][t]);
  }
}

// For one key row: dq_{r,t} += ds k;  dk += sum ds q_{r,t};  dv += sum p dout_{r,t}, over the
// rows r in [r_begin, r_end) (all of them for a shared key, one for a row's own).
template <int W, int R, int G>
DIFFUSE_INLINE void key_grads(const RowSet<R>& rs, int r_begin, int r_end, int32_t j, int64_t row, int d,
                              const float* k, float* dk, float* dv, const Geometry& g, simd::vf<W> (*dq)[G]) {
  using V = simd::vf<W>;
  const int hd = g.head_dim;
  const V kc = simd::load<V>(k + row + d);
  V dkc = simd::load<V>(dk + row + d);
  V dvc = simd::load<V>(dv + row + d);
  for (int r = r_begin; r < r_end; ++r)
    for (int t = 0; t < G; ++t) {
      const float ds = rs.ds[r][t * rs.n[r] + j], p = rs.s[r][t * rs.n[r] + j];
      dq[r][t] += ds * kc;
      dkc += ds * simd::load<V>(rs.q[r] + t * hd + d);
      dvc += p * simd::load<V>(rs.dout[r] + t * hd + d);
    }
  simd::store(dk + row + d, dkc);
  simd::store(dv + row + d, dvc);
}

struct Args {
  const float *q, *k, *v, *dout, *out, *lse_in;
  const float *kt, *vt;  // k and v transposed ([kv_heads][tiles][head_dim][16]), or null
  const int32_t *key_offsets, *key_rows;
  AttentionShape shape;
  Geometry g;
  float *out_w, *lse_w, *dq;
};

// The R rows from query row i on, heads [h, h + G) of kv head kvh. scratch: R * G * max_n floats
// (twice that for the backward).
template <int R, int G>
DIFFUSE_INLINE RowSet<R> row_set(const Args& a, int64_t i, int h, int32_t shared, float* scratch, int32_t max_n,
                                 bool backward) {
  RowSet<R> rs;
  const int64_t stride = static_cast<int64_t>(G) * max_n;
  for (int r = 0; r < R; ++r) {
    const int64_t qo = (i + r) * a.g.q_stride + static_cast<int64_t>(h) * a.g.head_dim;
    rs.q[r] = a.q + qo;
    rs.dout[r] = backward ? a.dout + qo : nullptr;
    rs.keys[r] = a.key_rows + a.key_offsets[i + r];
    rs.n[r] = a.key_offsets[i + r + 1] - a.key_offsets[i + r];
    rs.s[r] = scratch + r * stride;
    rs.ds[r] = backward ? scratch + (R + r) * stride : nullptr;
  }
  rs.r0 = rs.n[0] > 0 ? rs.keys[0][0] : 0;
  rs.shared = shared;
  return rs;
}

template <int W, int R, int G>
DIFFUSE_INLINE void forward_block(const Args& a, int64_t i, int kvh, int h, int32_t shared, float* scratch,
                                  int32_t max_n) {
  const Geometry& g = a.g;
  const int64_t kv_col = static_cast<int64_t>(kvh) * g.head_dim;
  const float* kt = a.kt ? a.kt + kvh * g.tiles * g.head_dim * kTile : nullptr;
  const RowSet<R> rs = row_set<R, G>(a, i, h, shared, scratch, max_n, false);
  block_dots<W, R, G>(rs, rs.q, a.k + kv_col, kt, g, g.scale, rs.s);
  float inv_sum[R][G];
  float* out[R];
  for (int r = 0; r < R; ++r) {
    out[r] = a.out_w + (i + r) * g.q_stride + static_cast<int64_t>(h) * g.head_dim;
    for (int t = 0; t < G; ++t) {
      float* lse = a.lse_w + (i + r) * a.shape.q_heads + h + t;
      if (rs.n[r] == 0) {  // no keys: zero output, lse -inf
        *lse = -std::numeric_limits<float>::infinity();
        inv_sum[r][t] = 0.f;
        continue;
      }
      if (a.shape.softcap > 0) softcap_scores(rs.s[r] + t * rs.n[r], rs.n[r], a.shape.softcap);
      const MaxSum ms = exp_shifted<W>(rs.s[r] + t * rs.n[r], rs.n[r]);
      *lse = ms.max + std::log(ms.sum);
      inv_sum[r][t] = 1.f / ms.sum;
    }
  }
  weighted_sum<W, R, G>(rs, a.v + kv_col, g, inv_sum, out);
}

// The backward of forward_block: writes dq of the block's heads and adds into dk / dv (full
// rows; only kv head kvh's columns change).
template <int W, int R, int G>
DIFFUSE_INLINE void backward_block(const Args& a, int64_t i, int kvh, int h, int32_t shared, float* dk,
                                   float* dv, float* scratch, int32_t max_n) {
  using V = simd::vf<W>;
  const Geometry& g = a.g;
  const int hd = g.head_dim;
  const int64_t kv_col = static_cast<int64_t>(kvh) * hd;
  const float* k = a.k + kv_col;
  const float* kt = a.kt ? a.kt + kvh * g.tiles * hd * kTile : nullptr;
  const float* vt = a.vt ? a.vt + kvh * g.tiles * hd * kTile : nullptr;
  const RowSet<R> rs = row_set<R, G>(a, i, h, shared, scratch, max_n, true);
  block_dots<W, R, G>(rs, rs.q, k, kt, g, g.scale, rs.s);         // s = scale q . k
  block_dots<W, R, G>(rs, rs.dout, a.v + kv_col, vt, g, 1.f, rs.ds);  // dp = dout . v
  // p = exp(s - lse);  ds = scale p (dp - D),  D = dout . out
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < G; ++t) {
      const int64_t qo = (i + r) * g.q_stride + static_cast<int64_t>(h + t) * hd;
      V acc{};
      for (int d = 0; d < hd; d += W) acc += simd::load<V>(a.dout + qo + d) * simd::load<V>(a.out + qo + d);
      const float D = simd::reduce_add(acc);
      const float lse = a.lse_in[(i + r) * a.shape.q_heads + h + t];
      float* p = rs.s[r] + t * rs.n[r];
      float* ds = rs.ds[r] + t * rs.n[r];
      if (a.shape.softcap > 0) {  // through the cap: ds_raw = ds_capped (1 - tanh^2)
        const float cap = a.shape.softcap;
        for (int32_t j = 0; j < rs.n[r]; ++j) {
          const float th = std::tanh(p[j] / cap);
          p[j] = simd::exp(cap * th - lse);
          ds[j] = p[j] * (ds[j] - D) * g.scale * (1.f - th * th);
        }
        continue;
      }
      int32_t j = 0;
      for (; j + W <= rs.n[r]; j += W) {
        const V pj = simd::exp(simd::load<V>(p + j) - lse);
        simd::store(p + j, pj);
        simd::store(ds + j, pj * (simd::load<V>(ds + j) - D) * g.scale);
      }
      for (; j < rs.n[r]; ++j) {
        p[j] = simd::exp(p[j] - lse);
        ds[j] = p[j] * (ds[j] - D) * g.scale;
      }
    }
  // dq = sum_j ds k_j;  dk_j += sum ds q;  dv_j += sum p dout
  for (int d = 0; d < hd; d += W) {
    V dq[R][G];
    for (int r = 0; r < R; ++r)
      for (int t = 0; t < G; ++t) dq[r][t] = V{};
    for (int32_t j = 0; j < rs.shared; ++j)
      key_grads<W, R, G>(rs, 0, R, j, (rs.r0 + j) * g.kv_stride, d, k, dk + kv_col, dv + kv_col, g, dq);
    for (int r = 0; r < R; ++r)
      for (int32_t j = rs.shared; j < rs.n[r]; ++j)
        key_grads<W, R, G>(rs, r, r + 1, j, rs.keys[r][j] * g.kv_stride, d, k, dk + kv_col, dv + kv_col, g, dq);
    for (int r = 0; r < R; ++r)
      for (int t = 0; t < G; ++t)
        simd::store(a.dq + (i + r) * g.q_stride + static_cast<int64_t>(h + t) * hd + d, dq[r][t]);
  }
}

// The length of the run of consecutive key rows a key list starts with.
int32_t leading_run(const int32_t* keys, int32_t n) {
  int32_t run = n > 0 ? 1 : 0;
  while (run < n && keys[run] == keys[0] + run) ++run;
  return run;
}

// How many rows from i on (up to kRowBlock, within end) go together, and the run they share.
struct Block {
  int rows;
  int32_t shared;
};
Block next_block(const Args& a, int64_t i, int64_t end) {
  const int32_t* keys0 = a.key_rows + a.key_offsets[i];
  const int32_t run0 = leading_run(keys0, a.key_offsets[i + 1] - a.key_offsets[i]);
  if (i + kRowBlock <= end && run0 >= kMinShared) {
    int32_t shared = run0;
    for (int r = 1; r < kRowBlock && shared >= kMinShared; ++r) {
      const int32_t* keys = a.key_rows + a.key_offsets[i + r];
      const int32_t n = a.key_offsets[i + r + 1] - a.key_offsets[i + r];
      shared = n > 0 && keys[0] == keys0[0] ? std::min(shared, leading_run(keys, n)) : 0;
    }
    if (shared >= kMinShared) return {kRowBlock, shared};
  }
  return {1, run0};
}

// forward_block / backward_block compiled for each instruction set at its vector width, by
// [rows == kRowBlock][G - 1].
using ForwardFn = void (*)(const Args&, int64_t, int, int, int32_t, float*, int32_t);
using BackwardFn = void (*)(const Args&, int64_t, int, int, int32_t, float*, float*, float*, int32_t);
struct Kernels {
  ForwardFn forward[2][kMaxHeads];
  BackwardFn backward[2][kMaxHeads];
};
#define DIFFUSE_ATTENTION_KERNELS(isa, target, W)                                                         \
  template <int R, int G>                                                                                \
  target void forward_##isa(const Args& a, int64_t i, int kvh, int h, int32_t shared, float* scratch,    \
                            int32_t max_n) {                                                             \
    forward_block<W, R, G>(a, i, kvh, h, shared, scratch, max_n);                                        \
  }                                                                                                      \
  template <int R, int G>                                                                                \
  target void backward_##isa(const Args& a, int64_t i, int kvh, int h, int32_t shared, float* dk,        \
                             float* dv, float* scratch, int32_t max_n) {                                 \
    backward_block<W, R, G>(a, i, kvh, h, shared, dk, dv, scratch, max_n);                                \
  }                                                                                                      \
  const Kernels isa##_kernels = {                                                                        \
      {{forward_##isa<1, 1>, forward_##isa<1, 2>, forward_##isa<1, 3>, forward_##isa<1, 4>},             \
       {forward_##isa<kRowBlock, 1>, forward_##isa<kRowBlock, 2>, forward_##isa<kRowBlock, 3>,           \
        forward_##isa<kRowBlock, 4>}},                                                                   \
      {{backward_##isa<1, 1>, backward_##isa<1, 2>, backward_##isa<1, 3>, backward_##isa<1, 4>},         \
       {backward_##isa<kRowBlock, 1>, backward_##isa<kRowBlock, 2>, backward_##isa<kRowBlock, 3>,        \
        backward_##isa<kRowBlock, 4>}}};
DIFFUSE_ATTENTION_KERNELS(avx512, DIFFUSE_TARGET_AVX512, 16)
DIFFUSE_ATTENTION_KERNELS(avx2, DIFFUSE_TARGET_AVX2, 8)
DIFFUSE_ATTENTION_KERNELS(generic, , 4)
#undef DIFFUSE_ATTENTION_KERNELS

const Kernels& kernels() {
  static const Kernels& k = simd::cpu_isa() == simd::Isa::avx512 ? avx512_kernels
                            : simd::cpu_isa() == simd::Isa::avx2 ? avx2_kernels
                                                                 : generic_kernels;
  return k;
}

// Query rows [begin, end), the q heads of kv head kvh; the backward adds into dk / dv.
void process_rows(const Args& a, int64_t begin, int64_t end, int kvh, bool backward, float* dk, float* dv,
                  float* scratch, int32_t max_n) {
  const Kernels& k = kernels();
  const int group = a.shape.q_heads / a.shape.kv_heads;
  for (int64_t i = begin; i < end;) {
    const Block b = next_block(a, i, end);
    const int blocked = b.rows == kRowBlock;
    for (int h = kvh * group; h < (kvh + 1) * group; h += kMaxHeads) {
      const int G = std::min(kMaxHeads, (kvh + 1) * group - h);
      if (backward) k.backward[blocked][G - 1](a, i, kvh, h, b.shared, dk, dv, scratch, max_n);
      else k.forward[blocked][G - 1](a, i, kvh, h, b.shared, scratch, max_n);
    }
    i += b.rows;
  }
}

// Splits query rows [0, rows) into `parts` contiguous blocks with about equal key counts (the
// work of a row is proportional to its keys).
std::vector<int64_t> split_by_keys(const int32_t* key_offsets, int64_t rows, int64_t parts) {
  std::vector<int64_t> bounds(parts + 1, rows);
  bounds[0] = 0;
  const int64_t first = key_offsets[0], total = key_offsets[rows] - first;
  for (int64_t p = 1; p < parts; ++p) {
    const int64_t target = first + total * p / parts;
    const int64_t r = std::lower_bound(key_offsets, key_offsets + rows + 1, target) - key_offsets;
    bounds[p] = std::clamp<int64_t>(r, bounds[p - 1], rows);
  }
  return bounds;
}

int32_t max_keys(const int32_t* key_offsets, int64_t begin, int64_t end) {
  int32_t m = 0;
  for (int64_t i = begin; i < end; ++i) m = std::max(m, key_offsets[i + 1] - key_offsets[i]);
  return m;
}

// x [rows x kv_heads x head_dim] transposed per kv head into tiles of 16 rows:
// [kv_heads][tiles][head_dim][16], rows past the end zero.
std::vector<float> transpose_heads(const float* x, const AttentionShape& s, int64_t tiles) {
  const int64_t hd = s.head_dim, width = s.kv_heads * hd;
  std::vector<float> xt(static_cast<size_t>(s.kv_heads) * tiles * hd * kTile, 0.f);
  parallel_for(s.kv_heads * tiles, 4, [&](int64_t begin, int64_t end) {
    for (int64_t ht = begin; ht < end; ++ht) {
      const int64_t h = ht / tiles, r0 = ht % tiles * kTile;
      float* tile = xt.data() + ht * hd * kTile;
      for (int64_t r = r0; r < std::min(r0 + kTile, s.kv_rows); ++r)
        for (int64_t d = 0; d < hd; ++d) tile[d * kTile + (r - r0)] = x[r * width + h * hd + d];
    }
  });
  return xt;
}

// The transposed copies pay off when rows read many keys: a trie's rows all read the prompt.
// A decode step (a few queries against the whole cache) skips them.
bool worth_transposing(const AttentionShape& s, const int32_t* key_offsets) {
  return key_offsets[s.q_rows] - key_offsets[0] >= 4 * s.kv_rows;
}

Args make_args(const AttentionShape& s, const int32_t* key_offsets, const int32_t* key_rows) {
  Args a{};
  a.key_offsets = key_offsets;
  a.key_rows = key_rows;
  a.shape = s;
  a.g = Geometry{s.head_dim, static_cast<int64_t>(s.q_heads) * s.head_dim,
                 static_cast<int64_t>(s.kv_heads) * s.head_dim, s.scale,
                 worth_transposing(s, key_offsets) ? (s.kv_rows + kTile - 1) / kTile : 0};
  return a;
}

// attention_forward for head dims that are a multiple of 16.
void forward_core(const float* q, const float* k, const float* v, const int32_t* key_offsets,
                  const int32_t* key_rows, const AttentionShape& s, float* out, float* lse) {
  if (s.q_rows <= 0) return;
  Args a = make_args(s, key_offsets, key_rows);
  a.q = q, a.k = k, a.v = v, a.out_w = out, a.lse_w = lse;
  const std::vector<float> kt = a.g.tiles ? transpose_heads(k, s, a.g.tiles) : std::vector<float>();
  a.kt = a.g.tiles ? kt.data() : nullptr;
  // Tasks are (row block, kv head); about 8 per thread, so uneven blocks still balance.
  const int64_t blocks = std::clamp<int64_t>((8 * thread_count() + s.kv_heads - 1) / s.kv_heads, 1, s.q_rows);
  const std::vector<int64_t> bounds = split_by_keys(key_offsets, s.q_rows, blocks);
  parallel_tasks(blocks * s.kv_heads, [&](int64_t task) {
    const int64_t b = task / s.kv_heads;
    const int kvh = static_cast<int>(task % s.kv_heads);
    const int32_t max_n = max_keys(key_offsets, bounds[b], bounds[b + 1]);
    std::vector<float> scratch(static_cast<size_t>(kRowBlock) * kMaxHeads * max_n + 1);
    process_rows(a, bounds[b], bounds[b + 1], kvh, false, nullptr, nullptr, scratch.data(), max_n);
  });
}

// Row blocks of the backward: about 4 per thread over the kv heads, fewer when their dk / dv
// copies would pass 256 MiB.
int64_t backward_blocks(const AttentionShape& s) {
  const int64_t copy_bytes = 2 * s.kv_rows * s.kv_heads * s.head_dim * static_cast<int64_t>(sizeof(float));
  const int64_t blocks = std::clamp<int64_t>((4 * thread_count() + s.kv_heads - 1) / s.kv_heads, 1, std::max<int64_t>(1, s.q_rows));
  return std::max<int64_t>(1, std::min<int64_t>(blocks, 1 + (int64_t{256} << 20) / std::max<int64_t>(1, copy_bytes)));
}

// attention_backward for head dims that are a multiple of 16.
void backward_core(const float* dout, const float* q, const float* k, const float* v, const float* out,
                   const float* lse, const int32_t* key_offsets, const int32_t* key_rows,
                   const AttentionShape& s, float* dq, float* dk, float* dv) {
  const int64_t kv_elems = s.kv_rows * s.kv_heads * s.head_dim;
  std::memset(dk, 0, kv_elems * sizeof(float));
  std::memset(dv, 0, kv_elems * sizeof(float));
  if (s.q_rows <= 0) return;
  Args a = make_args(s, key_offsets, key_rows);
  a.q = q, a.k = k, a.v = v, a.dout = dout, a.out = out, a.lse_in = lse, a.dq = dq;
  const std::vector<float> kt = a.g.tiles ? transpose_heads(k, s, a.g.tiles) : std::vector<float>();
  const std::vector<float> vt = a.g.tiles ? transpose_heads(v, s, a.g.tiles) : std::vector<float>();
  a.kt = a.g.tiles ? kt.data() : nullptr;
  a.vt = a.g.tiles ? vt.data() : nullptr;
  // Tasks are (row block, kv head). Block 0 adds into dk / dv directly, every other block into
  // its own zeroed copy, summed in block order at the end: no races, and the same result on
  // every run with the same thread count. The copies are capped at 256 MiB.
  const int64_t blocks = backward_blocks(s);
  const std::vector<int64_t> bounds = split_by_keys(key_offsets, s.q_rows, blocks);
  std::vector<float> copies(static_cast<size_t>(blocks - 1) * 2 * kv_elems, 0.f);
  parallel_tasks(blocks * s.kv_heads, [&](int64_t task) {
    const int64_t b = task / s.kv_heads;
    const int kvh = static_cast<int>(task % s.kv_heads);
    float* dkb = b == 0 ? dk : copies.data() + (b - 1) * 2 * kv_elems;
    float* dvb = b == 0 ? dv : dkb + kv_elems;
    const int32_t max_n = max_keys(key_offsets, bounds[b], bounds[b + 1]);
    std::vector<float> scratch(static_cast<size_t>(2 * kRowBlock) * kMaxHeads * max_n + 1);
    process_rows(a, bounds[b], bounds[b + 1], kvh, true, dkb, dvb, scratch.data(), max_n);
  });
  if (blocks == 1) return;
  parallel_for(kv_elems, 1 << 14, [&](int64_t begin, int64_t end) {
    for (int64_t b = 1; b < blocks; ++b) {
      const float* ck = copies.data() + (b - 1) * 2 * kv_elems;
      const float* cv = ck + kv_elems;
      for (int64_t i = begin; i < end; ++i) {
        dk[i] += ck[i];
        dv[i] += cv[i];
      }
    }
  });
}

// Head dims that are not a multiple of 16 run on copies zero-padded to one: the padding adds
// nothing to any dot product, and its outputs are dropped.
struct Padded {
  AttentionShape shape;
  int from, to;
  std::vector<float> pad(const float* x, int64_t rows, int heads) const {
    std::vector<float> y(static_cast<size_t>(rows) * heads * to, 0.f);
    for (int64_t i = 0; i < rows * heads; ++i) std::copy_n(x + i * from, from, y.data() + i * to);
    return y;
  }
  void unpad(const std::vector<float>& y, int64_t rows, int heads, float* x) const {
    for (int64_t i = 0; i < rows * heads; ++i) std::copy_n(y.data() + i * to, from, x + i * from);
  }
};
Padded padded(const AttentionShape& s) {
  Padded p{s, s.head_dim, (s.head_dim + kTile - 1) / kTile * kTile};
  p.shape.head_dim = p.to;
  return p;
}

}  // namespace

void attention_forward(const float* q, const float* k, const float* v, const int32_t* key_offsets,
                       const int32_t* key_rows, const AttentionShape& s, float* out, float* lse) {
  if (s.head_dim % kTile == 0) return forward_core(q, k, v, key_offsets, key_rows, s, out, lse);
  const Padded p = padded(s);
  std::vector<float> out_p(static_cast<size_t>(s.q_rows) * s.q_heads * p.to);
  forward_core(p.pad(q, s.q_rows, s.q_heads).data(), p.pad(k, s.kv_rows, s.kv_heads).data(),
               p.pad(v, s.kv_rows, s.kv_heads).data(), key_offsets, key_rows, p.shape, out_p.data(), lse);
  p.unpad(out_p, s.q_rows, s.q_heads, out);
}

void attention_backward(const float* dout, const float* q, const float* k, const float* v,
                        const float* out, const float* lse, const int32_t* key_offsets,
                        const int32_t* key_rows, const AttentionShape& s, float* dq, float* dk,
                        float* dv) {
  if (s.head_dim % kTile == 0)
    return backward_core(dout, q, k, v, out, lse, key_offsets, key_rows, s, dq, dk, dv);
  const Padded p = padded(s);
  std::vector<float> dq_p(static_cast<size_t>(s.q_rows) * s.q_heads * p.to);
  std::vector<float> dk_p(static_cast<size_t>(s.kv_rows) * s.kv_heads * p.to), dv_p(dk_p.size());
  backward_core(p.pad(dout, s.q_rows, s.q_heads).data(), p.pad(q, s.q_rows, s.q_heads).data(),
                p.pad(k, s.kv_rows, s.kv_heads).data(), p.pad(v, s.kv_rows, s.kv_heads).data(),
                p.pad(out, s.q_rows, s.q_heads).data(), lse, key_offsets, key_rows, p.shape, dq_p.data(),
                dk_p.data(), dv_p.data());
  p.unpad(dq_p, s.q_rows, s.q_heads, dq);
  p.unpad(dk_p, s.kv_rows, s.kv_heads, dk);
  p.unpad(dv_p, s.kv_rows, s.kv_heads, dv);
}

uint64_t attention_scratch_bytes(const AttentionShape& s, int64_t max_keys, bool backward) {
  const uint64_t f = sizeof(float), to = (s.head_dim + kTile - 1) / kTile * kTile;
  const uint64_t q_elems = static_cast<uint64_t>(s.q_rows) * s.q_heads * to, kv_elems = static_cast<uint64_t>(s.kv_rows) * s.kv_heads * to;
  const uint64_t tiles = static_cast<uint64_t>(s.kv_heads) * ((s.kv_rows + kTile - 1) / kTile) * to * kTile;
  const uint64_t rows_per_task = (backward ? 2 : 1) * static_cast<uint64_t>(kRowBlock) * kMaxHeads * max_keys + 1;
  const uint64_t tasks = static_cast<uint64_t>(thread_count()) * rows_per_task;
  // Padded copies: forward q, k, v and out; backward dout, q, k, v, out, dq, dk, dv.
  const uint64_t padded = to == static_cast<uint64_t>(s.head_dim) ? 0 : backward ? 4 * q_elems + 4 * kv_elems : 2 * q_elems + 2 * kv_elems;
  if (!backward) return f * (padded + tiles + tasks);
  AttentionShape p = s;
  p.head_dim = static_cast<int>(to);
  const uint64_t copies = static_cast<uint64_t>(backward_blocks(p) - 1) * 2 * kv_elems;
  return f * (padded + 2 * tiles + tasks + copies);
}

}  // namespace diffuse
