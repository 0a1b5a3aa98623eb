#include "cpu/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "cpu/gemm.h"
#include "cpu/lora_linear.h"
#include "cpu/simd.h"
#include "cpu/thread_pool.h"
#include "engine/random.h"

namespace diffuse {
namespace {

// Logit rows per block: the [rows x vocab] block stays near 16 MiB.
int64_t block_rows(int64_t vocab) { return std::clamp<int64_t>((int64_t{1} << 22) / vocab, 1, 64); }
// Vocabulary columns per GEMM task of a block.
constexpr int64_t kColumns = 2048;
// Values per block sum of the cumulative search.
constexpr int64_t kBlock = 16;

template <int W>
DIFFUSE_INLINE float row_max_body(const float* z, int64_t n) {
  return simd::max_of<W>(z, n);
}
DIFFUSE_SIMD_CLONES(float, row_max, row_max_body, (const float* z, int64_t n), (z, n))

// w[j] = e^((z[j] - zmax) / t) and, per block b of kBlock values, block[b] = the block's sum;
// returns the total (the block sums added in order, in double).
template <int W>
DIFFUSE_INLINE double exp_weights_body(const float* z, int64_t n, float zmax, float inv_t, float* w,
                                       float* block) {
  using V = simd::vf<W>;
  double total = 0;
  int64_t j = 0;
  for (; j + kBlock <= n; j += kBlock) {
    V sum{};
    for (int64_t c = j; c < j + kBlock; c += W) {
      const V e = simd::exp((simd::load<V>(z + c) - zmax) * inv_t);
      simd::store(w + c, e);
      sum += e;
    }
    total += block[j / kBlock] = simd::reduce_add(sum);
  }
  if (j < n) {
    float s = 0;
    for (int64_t i = j; i < n; ++i) s += w[i] = simd::exp((z[i] - zmax) * inv_t);
    total += block[j / kBlock] = s;
  }
  return total;
}
DIFFUSE_SIMD_CLONES(double, exp_weights, exp_weights_body,
                    (const float* z, int64_t n, float zmax, float inv_t, float* w, float* block),
                    (z, n, zmax, inv_t, w, block))

// The first index whose running sum of w passes target, scanning block sums first.
int32_t search_cumulative(const float* w, const float* block, int64_t n, double target) {
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  double acc = 0;
  int64_t b = 0;
  while (b + 1 < blocks && acc + block[b] <= target) acc += block[b++];
  const int64_t end = std::min(n, (b + 1) * kBlock);
  int64_t last_positive = b * kBlock;
  for (int64_t i = b * kBlock; i < end; ++i) {
    if (w[i] > 0.f) last_positive = i;
    acc += w[i];
    if (acc > target) return static_cast<int32_t>(i);
  }
  return static_cast<int32_t>(last_positive);  // rounding left the target just out of reach
}

// Scratch reused across the rows of one task.
struct Scratch {
  std::vector<float> w, block;
  std::vector<int32_t> idx;
  explicit Scratch(int64_t V) : w(V), block((V + kBlock - 1) / kBlock) {}
};

// Candidate order: higher logit first, lower token id first on ties.
struct Before {
  const float* z;
  bool operator()(int32_t x, int32_t y) const { return z[x] > z[y] || (z[x] == z[y] && x < y); }
};

// Given the k candidates idx[0, k), the smallest K whose K best hold tempered mass >= target
// (the nucleus), by weighted quickselect: O(k), no sort. On return idx[0, K) are those K.
int64_t nucleus_size(std::vector<int32_t>& idx, int64_t k, const float* w, double target, Before before) {
  int64_t lo = 0, hi = k;  // the best lo hold less than target, the best hi at least target
  double above = 0;        // the mass of the best lo
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    std::nth_element(idx.begin() + lo, idx.begin() + mid, idx.begin() + hi, before);
    double m = 0;
    for (int64_t i = lo; i < mid; ++i) m += w[idx[i]];
    if (above + m >= target) {
      hi = mid;
    } else {
      above += m;
      lo = mid;
    }
  }
  return hi;
}

// w's block sums (16 values each), recomputed; returns the total.
double block_sums(const float* w, int64_t n, float* block) {
  double total = 0;
  for (int64_t j = 0; j < n; j += kBlock) {
    float s = 0;
    for (int64_t i = j; i < std::min(n, j + kBlock); ++i) s += w[i];
    total += block[j / kBlock] = s;
  }
  return total;
}

// One token from logits z [V] with uniform draw u; logp at temperature 1 goes to *logp. The
// draw inverts the cumulative distribution over token ids in ascending order, filtered or not.
int32_t draw(const float* z, int64_t V, const SampleParams& p, double u, Scratch& s, float* logp) {
  const float zmax = row_max(z, V);
  const double total1 = exp_weights(z, V, zmax, 1.f, s.w.data(), s.block.data());  // for logp
  const double lse = zmax + std::log(total1);
  int32_t token;
  if (p.temperature <= 0.f) {
    token = static_cast<int32_t>(std::find(z, z + V, zmax) - z);
  } else {
    const float inv_t = 1.f / p.temperature;
    double total = inv_t == 1.f ? total1 : exp_weights(z, V, zmax, inv_t, s.w.data(), s.block.data());
    const int64_t k = p.top_k > 0 ? std::min<int64_t>(p.top_k, V) : V;
    if (k < V || p.top_p < 1.f) {
      // Kept: the top k (see Before), then the fewest of those whose tempered mass reaches
      // top_p of theirs. The others get weight 0.
      const Before before{z};
      s.idx.resize(V);
      std::iota(s.idx.begin(), s.idx.end(), 0);
      if (k < V) {
        std::nth_element(s.idx.begin(), s.idx.begin() + k, s.idx.end(), before);
        total = 0;
        for (int64_t i = 0; i < k; ++i) total += s.w[s.idx[i]];
      }
      const int64_t keep = p.top_p < 1.f ? nucleus_size(s.idx, k, s.w.data(), p.top_p * total, before) : k;
      for (int64_t i = keep; i < V; ++i) s.w[s.idx[i]] = 0.f;
      total = block_sums(s.w.data(), V, s.block.data());
    }
    token = search_cumulative(s.w.data(), s.block.data(), V, u * total);
  }
  *logp = static_cast<float>(z[token] - lse);
  return token;
}

}  // namespace

double uniform_draw(uint64_t seed, uint64_t stream, uint64_t step) {
  return uniform_from_counter(seed, stream, step);
}

uint64_t sample_scratch_bytes(int64_t n, int64_t vocab, int64_t dim) {
  if (n == 0) return 0;
  const uint64_t block = static_cast<uint64_t>(std::min(n, block_rows(vocab))), V = static_cast<uint64_t>(vocab);
  return sizeof(float) * (block * (dim + V) + static_cast<uint64_t>(thread_count()) * (2 * V + V / kBlock + 1));
}

void sample_tokens(const float* hidden, int64_t dim, const LinearWeight& head, const int32_t* rows,
                   const uint64_t* streams, int64_t n, const SampleParams& params, uint64_t step,
                   int32_t* tokens, float* logp) {
  const int64_t V = head.out;
  const StoredMatrix Wh = stored_matrix(head);
  const int64_t block = std::min(n, block_rows(V));
  std::vector<float> H(static_cast<size_t>(block) * dim), Z(static_cast<size_t>(block) * V);
  for (int64_t i0 = 0; i0 < n; i0 += block) {
    const int64_t b = std::min(block, n - i0);
    for (int64_t i = 0; i < b; ++i)
      std::copy_n(hidden + static_cast<int64_t>(rows[i0 + i]) * dim, dim, H.data() + i * dim);
    // The logits, in vocabulary slices spread over the threads (one row alone keeps them busy).
    parallel_tasks((V + kColumns - 1) / kColumns, [&](int64_t c) {
      const int64_t v0 = c * kColumns;
      sgemm_nt(b, std::min(kColumns, V - v0), dim, H.data(), dim, Wh.rows_from(v0), 0.f, Z.data() + v0, V);
    });
    parallel_for(b, 1, [&](int64_t begin, int64_t end) {
      Scratch scratch(V);
      for (int64_t i = begin; i < end; ++i) {
        if (params.logit_softcap > 0)  // Gemma 2's final soft-cap
          for (float* z = Z.data() + i * V, *end_z = z + V; z < end_z; ++z) *z = params.logit_softcap * std::tanh(*z / params.logit_softcap);
        const double u = uniform_draw(params.seed, streams[i0 + i], step);
        tokens[i0 + i] = draw(Z.data() + i * V, V, params, u, scratch, &logp[i0 + i]);
      }
    });
  }
}

}  // namespace diffuse
