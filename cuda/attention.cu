// Tree-masked attention, flash-style: online softmax, no rows x rows score matrix anywhere.
// Query row i attends to its key list key_rows[key_offsets[i] .. key_offsets[i+1]):
//
//   forward:  s_j = scale q . k_j;  m = max s;  l = sum exp(s_j - m);  out = sum_j exp(s_j - m) v_j / l
//             lse = m + log l  (saved)
//   backward: p_j = exp(s_j - lse);  dp_j = dout . v_j;  D = dout . out;  ds_j = p_j (dp_j - D)
//             dq = scale sum_j ds_j k_j;  dk_j += scale ds_j q;  dv_j += p_j dout
//   soft-cap (shape.softcap = c > 0, Gemma 2): s_j = c tanh(scale q . k_j / c), and ds_j gains
//             the factor 1 - tanh^2 (soft_cap below).
//
// The graph builds every list root-first: a contiguous run of rows (the prompt, and the
// trie nodes that directly follow their parents) and then a short path of ancestors. A small
// kernel finds each row's run [start, start + len). A block then takes up to 16 (row, head)
// pairs -- consecutive rows, all the query heads of one kv head (GQA) -- and walks the union
// of their runs in tiles of 32 keys staged in shared memory, so a prompt's keys and values
// are read once per block rather than once per query; tiles no pair needs are skipped, and
// each pair masks the keys outside its own run. The remaining ancestors ("tail") are read
// straight from global memory, one warp per pair.
//
// Within a warp, lane j owns key j of a tile for the scores, and the head dimension is
// spread over the lanes (two dims per 4-byte word) for the output accumulators. The
// backward runs twice over the runs: key-major for dk and dv (a block owns a tile of keys and
// walks the pairs whose runs meet it, summing in registers, one write per row, no atomics),
// then query-major for dq (kept in registers, as in the forward) and the tails, whose dk / dv
// terms are added to the f32 rows atomically, then everything is rounded to bf16. Only the
// tails' order of addition varies between runs (at the level of f32 rounding); a long causal
// prompt costs no atomics.
//
// This runs on the CUDA cores. The faster design is FlashAttention-2/3 on tensor cores
// (mma.sync or wgmma tiles of 64+ queries x 64 keys, with the tree mask applied to the
// run tiles and the tails batched per trie level); at our workloads' few thousand rows and
// ~40-key prompts attention is a few percent of a step, far behind the linear layers.
#include <climits>

#include "ops.cuh"

namespace diffuse {
namespace cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kPairs = 16;               // (row, head) pairs per block
constexpr int kSlots = kPairs / kWarps;  // pairs per warp: pair = warp + kWarps * slot
constexpr int kTile = 32;                // keys per shared tile: one per lane

struct AttnParams {
  const bf16* q;
  const bf16* k;
  const bf16* v;
  const bf16* out;   // backward: the forward's output
  const bf16* dout;  // backward
  const float* lse;  // backward
  const int32_t* key_offsets;
  const int32_t* key_rows;
  const int32_t* run_start;
  const int32_t* run_len;
  bf16* o;           // forward output
  float* lse_out;    // forward
  bf16* dq;          // backward
  float* dk_acc;     // backward, [kv_rows x kv_heads x head_dim]
  float* dv_acc;
  int64_t q_rows, kv_rows;
  int q_heads, kv_heads, head_dim, group;
  int heads_per_block, rows_per_block, head_chunks;
  float scale;
  float softcap;  // 0: none
};

// Gemma 2's attention soft-cap on one score: c tanh(s / c) when c > 0, with *slope = d/ds of it
// (1 - tanh^2), which the backward's ds carries.
__device__ __forceinline__ float soft_cap(float s, float cap, float* slope) {
  if (cap <= 0.f) {
    *slope = 1.f;
    return s;
  }
  const float t = tanhf(s / cap);
  *slope = 1.f - t * t;
  return cap * t;
}
__device__ __forceinline__ float soft_cap(float s, float cap) {
  float slope;
  return soft_cap(s, cap, &slope);
}

// Each row's contiguous run: run_len = the longest L with key_rows[k0 + j] == key_rows[k0] + j
// for j < L. One warp per row.
__global__ void attention_runs_kernel(const int32_t* __restrict__ offsets, const int32_t* __restrict__ keys, int64_t rows,
                                      int32_t* __restrict__ run_start, int32_t* __restrict__ run_len) {
  const int64_t row = (blockIdx.x * int64_t{blockDim.x} + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;  // uniform across the warp
  const int32_t k0 = offsets[row], n = offsets[row + 1] - k0;
  if (n <= 0) {
    if (lane == 0) run_start[row] = 0, run_len[row] = 0;
    return;
  }
  const int32_t s = keys[k0];
  int32_t len = n;
  for (int32_t base = 0; base < n; base += 32) {
    const int32_t j = base + lane;
    const unsigned broken = __ballot_sync(0xffffffffu, j < n && keys[k0 + j] != s + j);
    if (broken) {
      len = base + __ffs(broken) - 1;
      break;
    }
  }
  if (lane == 0) run_start[row] = s, run_len[row] = len;
}

// The row and query head of pair `pp` of this block, or false when the slot is empty.
__device__ __forceinline__ bool pair_of(const AttnParams& p, int pp, int kvh, int chunk, int64_t& row, int& head) {
  const int local_row = pp / p.heads_per_block, local_head = pp % p.heads_per_block;
  if (local_row >= p.rows_per_block) return false;
  row = static_cast<int64_t>(blockIdx.x) * p.rows_per_block + local_row;
  const int head_in_group = chunk * p.heads_per_block + local_head;
  if (row >= p.q_rows || head_in_group >= p.group) return false;
  head = kvh * p.group + head_in_group;
  return true;
}

// a . b over `words` bf16 pairs, fp32.
__device__ __forceinline__ float dot_bf16(const bf16* a, const bf16* b, int words) {
  const bf162* a2 = reinterpret_cast<const bf162*>(a);
  const bf162* b2 = reinterpret_cast<const bf162*>(b);
  float s0 = 0.f, s1 = 0.f;
  for (int w = 0; w < words; ++w) {
    const float2 x = __bfloat1622float2(a2[w]), y = __bfloat1622float2(b2[w]);
    s0 = fmaf(x.x, y.x, s0);
    s1 = fmaf(x.y, y.y, s1);
  }
  return s0 + s1;
}

// acc[2t], acc[2t+1] are dims 2w, 2w+1 of the head with word w = lane + 32 t.
template <int kWpl>
__device__ __forceinline__ void axpy_row(float (&acc)[2 * kWpl], float a, const bf16* row, int words, int lane) {
  const bf162* r2 = reinterpret_cast<const bf162*>(row);
#pragma unroll
  for (int t = 0; t < kWpl; ++t) {
    const int w = lane + 32 * t;
    if (w < words) {
      const float2 x = __bfloat1622float2(r2[w]);
      acc[2 * t] = fmaf(a, x.x, acc[2 * t]);
      acc[2 * t + 1] = fmaf(a, x.y, acc[2 * t + 1]);
    }
  }
}

// One step of the online softmax for a warp's pair over up to 32 keys (lane j holds score j,
// -inf when masked); value row j comes from value_row(j).
template <int kWpl, typename ValueRow>
__device__ __forceinline__ void online_update(float score, int count, float& m, float& l, float (&acc)[2 * kWpl],
                                              ValueRow value_row, int words, int lane) {
  const float m_new = fmaxf(m, warp_max(score));
  if (m_new == -INFINITY) return;  // nothing valid yet (uniform across the warp)
  const float pj = score == -INFINITY ? 0.f : expf(score - m_new);
  const float corr = expf(m - m_new);  // 0 when m was -inf
  l = l * corr + warp_sum(pj);
#pragma unroll
  for (int i = 0; i < 2 * kWpl; ++i) acc[i] *= corr;
  for (int j = 0; j < count; ++j) {
    const float pb = __shfl_sync(0xffffffffu, pj, j);
    if (pb != 0.f) axpy_row<kWpl>(acc, pb, value_row(j), words, lane);
  }
  m = m_new;
}

// Pair bookkeeping shared by both kernels: fills the run / list bounds and the union of runs.
struct PairInfo {
  int start[kPairs], len[kPairs], k0[kPairs], k1[kPairs];
  int lo, hi;
};

__device__ void load_pairs(const AttnParams& p, int kvh, int chunk, PairInfo& info, bf16* Qs, const bf16* src_q,
                           bf16* dOs, const bf16* src_do) {
  const int tid = threadIdx.x, hd = p.head_dim, words = hd / 2;
  if (tid < kPairs) {
    int64_t row;
    int head;
    if (pair_of(p, tid, kvh, chunk, row, head)) {
      info.k0[tid] = p.key_offsets[row];
      info.k1[tid] = p.key_offsets[row + 1];
      info.start[tid] = p.run_start[row];
      info.len[tid] = p.run_len[row];
    } else {
      info.k0[tid] = info.k1[tid] = info.start[tid] = info.len[tid] = 0;
    }
  }
  for (int idx = tid; idx < kPairs * words; idx += kThreads) {
    const int pp = idx / words, w = idx % words;
    int64_t row = 0;
    int head = 0;
    const bool ok = pair_of(p, pp, kvh, chunk, row, head);
    const int64_t at = (row * p.q_heads + head) * words + w;
    const bf162 zero = __floats2bfloat162_rn(0.f, 0.f);
    reinterpret_cast<bf162*>(Qs)[pp * words + w] = ok ? reinterpret_cast<const bf162*>(src_q)[at] : zero;
    if (dOs) reinterpret_cast<bf162*>(dOs)[pp * words + w] = ok ? reinterpret_cast<const bf162*>(src_do)[at] : zero;
  }
  __syncthreads();
  if (tid == 0) {
    int lo = INT_MAX, hi = INT_MIN;
    for (int pp = 0; pp < kPairs; ++pp)
      if (info.len[pp] > 0) {
        lo = min(lo, info.start[pp]);
        hi = max(hi, info.start[pp] + info.len[pp]);
      }
    info.lo = lo == INT_MAX ? 0 : lo;
    info.hi = hi == INT_MIN ? 0 : hi;
  }
  __syncthreads();
}

// Whether any pair's run meets keys [t0, t0 + kTile) (the same answer in every thread).
__device__ __forceinline__ bool tile_needed(const PairInfo& info, int t0) {
  for (int pp = 0; pp < kPairs; ++pp)
    if (info.len[pp] > 0 && info.start[pp] < t0 + kTile && info.start[pp] + info.len[pp] > t0) return true;
  return false;
}

// Keys / values t0 .. t0 + kTile - 1 of kv head kvh into shared rows of stride hd + 2
// (an odd number of words for hd % 4 == 0, so lane-per-row reads are conflict-free).
__device__ void load_kv_tile(const AttnParams& p, int kvh, int t0, bf16* Ks, bf16* Vs) {
  const int words = p.head_dim / 2, stride = words + 1;
  const bf162 zero = __floats2bfloat162_rn(0.f, 0.f);
  for (int idx = threadIdx.x; idx < kTile * words; idx += kThreads) {
    const int j = idx / words, w = idx % words;
    const int64_t key = t0 + j;
    const bool ok = key < p.kv_rows;
    const int64_t at = (key * p.kv_heads + kvh) * words + w;
    reinterpret_cast<bf162*>(Ks)[j * stride + w] = ok ? reinterpret_cast<const bf162*>(p.k)[at] : zero;
    reinterpret_cast<bf162*>(Vs)[j * stride + w] = ok ? reinterpret_cast<const bf162*>(p.v)[at] : zero;
  }
}

template <int kWpl>
__global__ void __launch_bounds__(kThreads) attention_forward_kernel(AttnParams p) {
  extern __shared__ __align__(16) unsigned char shared_raw[];
  __shared__ PairInfo info;
  const int hd = p.head_dim, words = hd / 2, stride = hd + 2;
  bf16* Qs = reinterpret_cast<bf16*>(shared_raw);
  bf16* Ks = Qs + kPairs * hd;
  bf16* Vs = Ks + kTile * stride;
  const int kvh = blockIdx.y / p.head_chunks, chunk = blockIdx.y % p.head_chunks;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  load_pairs(p, kvh, chunk, info, Qs, p.q, nullptr, nullptr);

  float m[kSlots], l[kSlots], acc[kSlots][2 * kWpl];
#pragma unroll
  for (int s = 0; s < kSlots; ++s) {
    m[s] = -INFINITY;
    l[s] = 0.f;
#pragma unroll
    for (int i = 0; i < 2 * kWpl; ++i) acc[s][i] = 0.f;
  }

  for (int t0 = info.lo; t0 < info.hi; t0 += kTile) {
    if (!tile_needed(info, t0)) continue;
    __syncthreads();  // the previous tile is no longer read
    load_kv_tile(p, kvh, t0, Ks, Vs);
    __syncthreads();
#pragma unroll
    for (int s = 0; s < kSlots; ++s) {
      const int pp = warp + kWarps * s;
      const int start = info.start[pp], len = info.len[pp];
      if (len == 0) continue;
      const int key = t0 + lane;
      const bool valid = key >= start && key < start + len;
      const float score = valid ? soft_cap(p.scale * dot_bf16(Qs + pp * hd, Ks + lane * stride, words), p.softcap) : -INFINITY;
      online_update<kWpl>(score, kTile, m[s], l[s], acc[s], [&](int j) { return Vs + j * stride; }, words, lane);
    }
  }

#pragma unroll
  for (int s = 0; s < kSlots; ++s) {
    const int pp = warp + kWarps * s;
    int64_t row;
    int head;
    if (!pair_of(p, pp, kvh, blockIdx.y % p.head_chunks, row, head)) continue;
    for (int b = info.k0[pp] + info.len[pp]; b < info.k1[pp]; b += 32) {
      const int j = b + lane;
      const bool valid = j < info.k1[pp];
      const int64_t key = valid ? p.key_rows[j] : 0;
      const float score =
          valid ? soft_cap(p.scale * dot_bf16(Qs + pp * hd, p.k + (key * p.kv_heads + kvh) * hd, words), p.softcap) : -INFINITY;
      online_update<kWpl>(score, min(32, info.k1[pp] - b), m[s], l[s], acc[s],
                          [&](int jj) {
                            const int64_t kj = __shfl_sync(0xffffffffu, key, jj);
                            return p.v + (kj * p.kv_heads + kvh) * hd;
                          },
                          words, lane);
    }
    const float inv = l[s] > 0.f ? 1.f / l[s] : 0.f;
    bf162* o2 = reinterpret_cast<bf162*>(p.o + (row * p.q_heads + head) * hd);
#pragma unroll
    for (int t = 0; t < kWpl; ++t) {
      const int w = lane + 32 * t;
      if (w < words) o2[w] = __floats2bfloat162_rn(acc[s][2 * t] * inv, acc[s][2 * t + 1] * inv);
    }
    if (lane == 0) p.lse_out[row * p.q_heads + head] = l[s] > 0.f ? m[s] + logf(l[s]) : -INFINITY;
  }
}

template <int kWpl>
__global__ void __launch_bounds__(kThreads) attention_backward_kernel(AttnParams p) {
  extern __shared__ __align__(16) unsigned char shared_raw[];
  __shared__ PairInfo info;
  const int hd = p.head_dim, words = hd / 2, stride = hd + 2;
  bf16* Qs = reinterpret_cast<bf16*>(shared_raw);
  bf16* dOs = Qs + kPairs * hd;
  bf16* Ks = dOs + kPairs * hd;
  bf16* Vs = Ks + kTile * stride;
  const int kvh = blockIdx.y / p.head_chunks, chunk = blockIdx.y % p.head_chunks;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  load_pairs(p, kvh, chunk, info, Qs, p.q, dOs, p.dout);

  // Per pair of this warp: D = dout . out and the saved lse.
  float D[kSlots], lse[kSlots], dq[kSlots][2 * kWpl];
#pragma unroll
  for (int s = 0; s < kSlots; ++s) {
    const int pp = warp + kWarps * s;
    int64_t row;
    int head;
    D[s] = 0.f;
    lse[s] = 0.f;
#pragma unroll
    for (int i = 0; i < 2 * kWpl; ++i) dq[s][i] = 0.f;
    if (!pair_of(p, pp, kvh, chunk, row, head)) continue;
    float part = 0.f;
    const bf162* o2 = reinterpret_cast<const bf162*>(p.out + (row * p.q_heads + head) * hd);
    const bf162* d2 = reinterpret_cast<const bf162*>(dOs + pp * hd);
    for (int w = lane; w < words; w += 32) {
      const float2 o = __bfloat1622float2(o2[w]), d = __bfloat1622float2(d2[w]);
      part += o.x * d.x + o.y * d.y;
    }
    D[s] = warp_sum(part);
    lse[s] = p.lse[row * p.q_heads + head];
  }

  for (int t0 = info.lo; t0 < info.hi; t0 += kTile) {
    if (!tile_needed(info, t0)) continue;
    __syncthreads();  // the previous tile is no longer read
    load_kv_tile(p, kvh, t0, Ks, Vs);
    __syncthreads();
    // A warp per pair: p_j and ds_j for the tile's keys, and dq (dk, dv: the key-major kernel).
#pragma unroll
    for (int s = 0; s < kSlots; ++s) {
      const int pp = warp + kWarps * s;
      const int start = info.start[pp], len = info.len[pp];
      const int key = t0 + lane;
      float pj = 0.f, ds = 0.f;
      if (len > 0 && key >= start && key < start + len) {
        float slope;
        pj = expf(soft_cap(p.scale * dot_bf16(Qs + pp * hd, Ks + lane * stride, words), p.softcap, &slope) - lse[s]);
        ds = pj * (dot_bf16(dOs + pp * hd, Vs + lane * stride, words) - D[s]) * slope;
      }
      if (len == 0) continue;
      for (int j = 0; j < kTile; ++j) {
        const float dsj = __shfl_sync(0xffffffffu, ds, j);
        if (dsj != 0.f) axpy_row<kWpl>(dq[s], dsj, Ks + j * stride, words, lane);
      }
    }
  }

  // Tails, a warp per pair, keys from global memory.
#pragma unroll
  for (int s = 0; s < kSlots; ++s) {
    const int pp = warp + kWarps * s;
    int64_t row;
    int head;
    if (!pair_of(p, pp, kvh, chunk, row, head)) continue;
    const bf162* q2 = reinterpret_cast<const bf162*>(Qs + pp * hd);
    const bf162* do2 = reinterpret_cast<const bf162*>(dOs + pp * hd);
    for (int b = info.k0[pp] + info.len[pp]; b < info.k1[pp]; b += 32) {
      const int j = b + lane;
      const bool valid = j < info.k1[pp];
      const int64_t key = valid ? p.key_rows[j] : 0;
      float pj = 0.f, ds = 0.f;
      if (valid) {
        const int64_t at = (key * p.kv_heads + kvh) * hd;
        float slope;
        pj = expf(soft_cap(p.scale * dot_bf16(Qs + pp * hd, p.k + at, words), p.softcap, &slope) - lse[s]);
        ds = pj * (dot_bf16(dOs + pp * hd, p.v + at, words) - D[s]) * slope;
      }
      const int count = min(32, info.k1[pp] - b);
      for (int jj = 0; jj < count; ++jj) {
        const int64_t kj = __shfl_sync(0xffffffffu, key, jj);
        const float dsj = __shfl_sync(0xffffffffu, ds, jj), pjj = __shfl_sync(0xffffffffu, pj, jj);
        const int64_t at = (kj * p.kv_heads + kvh) * hd;
        axpy_row<kWpl>(dq[s], dsj, p.k + at, words, lane);
#pragma unroll
        for (int t = 0; t < kWpl; ++t) {
          const int w = lane + 32 * t;
          if (w < words) {
            const float2 qv = __bfloat1622float2(q2[w]), dv = __bfloat1622float2(do2[w]);
            atomicAdd(p.dk_acc + at + 2 * w, p.scale * dsj * qv.x);
            atomicAdd(p.dk_acc + at + 2 * w + 1, p.scale * dsj * qv.y);
            atomicAdd(p.dv_acc + at + 2 * w, pjj * dv.x);
            atomicAdd(p.dv_acc + at + 2 * w + 1, pjj * dv.y);
          }
        }
      }
    }
    bf162* g2 = reinterpret_cast<bf162*>(p.dq + (row * p.q_heads + head) * hd);
#pragma unroll
    for (int t = 0; t < kWpl; ++t) {
      const int w = lane + 32 * t;
      if (w < words) g2[w] = __floats2bfloat162_rn(p.scale * dq[s][2 * t], p.scale * dq[s][2 * t + 1]);
    }
  }
}

// The backward's dk and dv over the runs, key-major: a block per (tile of kTile keys, kv head)
// owns those keys' gradient rows, so it sums into registers and writes each row once, with no
// atomics (the query-major kernel above then adds the tail keys' terms atomically). It finds
// the (row, head) pairs whose run meets its tile by reading every row's run bounds, a chunk of
// kThreads rows at a time, and takes the pairs kPairs at a time: their q and dout rows into
// shared memory with lse and D = dout . out; p_j and ds_j for the tile's keys (a warp per
// pair, a lane per key); then a warp per key adds ds_j q and p_j dout over the pairs.
template <int kWpl>
__global__ void __launch_bounds__(kThreads) attention_backward_dkdv_kernel(AttnParams p) {
  extern __shared__ __align__(16) unsigned char shared_raw[];
  __shared__ int32_t rows[kThreads];  // rows of this chunk whose run meets the tile
  __shared__ int warp_hits[kWarps];
  __shared__ int pair_start[kPairs], pair_len[kPairs];
  __shared__ float pair_lse[kPairs], pair_D[kPairs];
  constexpr int kKeysPerWarp = kTile / kWarps;
  const int hd = p.head_dim, words = hd / 2, stride = hd + 2;
  bf16* Qs = reinterpret_cast<bf16*>(shared_raw);
  bf16* dOs = Qs + kPairs * hd;
  bf16* Ks = dOs + kPairs * hd;
  bf16* Vs = Ks + kTile * stride;
  float* Ps = reinterpret_cast<float*>(Vs + kTile * stride);  // [kPairs][kTile]
  float* DSs = Ps + kPairs * kTile;
  const int kvh = blockIdx.y, t0 = static_cast<int>(blockIdx.x) * kTile;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  load_kv_tile(p, kvh, t0, Ks, Vs);

  float dk[kKeysPerWarp][2 * kWpl], dv[kKeysPerWarp][2 * kWpl];
#pragma unroll
  for (int i = 0; i < kKeysPerWarp; ++i)
#pragma unroll
    for (int e = 0; e < 2 * kWpl; ++e) dk[i][e] = dv[i][e] = 0.f;

  for (int64_t base = 0; base < p.q_rows; base += kThreads) {
    // The chunk's rows whose run meets [t0, t0 + kTile), in row order.
    const int64_t row = base + tid;
    bool hit = false;
    if (row < p.q_rows) {
      const int32_t start = p.run_start[row], len = p.run_len[row];
      hit = len > 0 && start < t0 + kTile && start + len > t0;
    }
    const unsigned ballot = __ballot_sync(0xffffffffu, hit);
    __syncthreads();  // the previous chunk's rows and pairs are no longer read
    if (lane == 0) warp_hits[warp] = __popc(ballot);
    __syncthreads();
    int before = 0, hits = 0;
    for (int w = 0; w < kWarps; ++w) {
      before += w < warp ? warp_hits[w] : 0;
      hits += warp_hits[w];
    }
    if (hit) rows[before + __popc(ballot & ((1u << lane) - 1))] = static_cast<int32_t>(row);
    __syncthreads();

    const int pairs = hits * p.group;  // every query head of the group reads this kv head
    for (int b0 = 0; b0 < pairs; b0 += kPairs) {
      if (b0 > 0) __syncthreads();  // the previous pairs' rows, Ps and DSs are no longer read
      for (int idx = tid; idx < kPairs * words; idx += kThreads) {
        const int pp = idx / words, w = idx % words, q = b0 + pp;
        const bf162 zero = __floats2bfloat162_rn(0.f, 0.f);
        bf162 qv = zero, dov = zero;
        if (q < pairs) {
          const int64_t at = (static_cast<int64_t>(rows[q / p.group]) * p.q_heads + kvh * p.group + q % p.group) * words + w;
          qv = reinterpret_cast<const bf162*>(p.q)[at];
          dov = reinterpret_cast<const bf162*>(p.dout)[at];
        }
        reinterpret_cast<bf162*>(Qs)[pp * words + w] = qv;
        reinterpret_cast<bf162*>(dOs)[pp * words + w] = dov;
      }
      // A warp per pair: its run, lse and D = dout . out.
      for (int pp = warp; pp < kPairs; pp += kWarps) {
        const int q = b0 + pp;
        float part = 0.f;
        int64_t r = 0, head = 0;
        if (q < pairs) {
          r = rows[q / p.group];
          head = kvh * p.group + q % p.group;
          const bf162* o2 = reinterpret_cast<const bf162*>(p.out + (r * p.q_heads + head) * hd);
          const bf162* d2 = reinterpret_cast<const bf162*>(p.dout + (r * p.q_heads + head) * hd);
          for (int w = lane; w < words; w += 32) {
            const float2 o = __bfloat1622float2(o2[w]), d = __bfloat1622float2(d2[w]);
            part += o.x * d.x + o.y * d.y;
          }
        }
        part = warp_sum(part);
        if (lane == 0) {
          pair_start[pp] = q < pairs ? p.run_start[r] : 0;
          pair_len[pp] = q < pairs ? p.run_len[r] : 0;
          pair_lse[pp] = q < pairs ? p.lse[r * p.q_heads + head] : 0.f;
          pair_D[pp] = part;
        }
      }
      __syncthreads();
      // A warp per pair, a lane per key: p_j and ds_j.
      for (int pp = warp; pp < kPairs; pp += kWarps) {
        const int key = t0 + lane;
        float pj = 0.f, ds = 0.f;
        if (pair_len[pp] > 0 && key >= pair_start[pp] && key < pair_start[pp] + pair_len[pp] && key < p.kv_rows) {
          float slope;
          pj = expf(soft_cap(p.scale * dot_bf16(Qs + pp * hd, Ks + lane * stride, words), p.softcap, &slope) - pair_lse[pp]);
          ds = pj * (dot_bf16(dOs + pp * hd, Vs + lane * stride, words) - pair_D[pp]) * slope;
        }
        Ps[pp * kTile + lane] = pj;
        DSs[pp * kTile + lane] = ds;
      }
      __syncthreads();
      // A warp per key: dk_j += ds_j q, dv_j += p_j dout over the pairs.
#pragma unroll
      for (int i = 0; i < kKeysPerWarp; ++i) {
        const int j = warp + kWarps * i;
        for (int pp = 0; pp < kPairs; ++pp) {
          const float pj = Ps[pp * kTile + j], ds = DSs[pp * kTile + j];
          if (pj == 0.f && ds == 0.f) continue;  // the same for the whole warp
          axpy_row<kWpl>(dk[i], ds, Qs + pp * hd, words, lane);
          axpy_row<kWpl>(dv[i], pj, dOs + pp * hd, words, lane);
        }
      }
    }
  }

  // Every key row of the tile, used or not, written once (the tails add to it afterwards).
#pragma unroll
  for (int i = 0; i < kKeysPerWarp; ++i) {
    const int64_t key = t0 + warp + kWarps * i;
    if (key >= p.kv_rows) continue;
    float* dk_row = p.dk_acc + (key * p.kv_heads + kvh) * hd;
    float* dv_row = p.dv_acc + (key * p.kv_heads + kvh) * hd;
#pragma unroll
    for (int t = 0; t < kWpl; ++t) {
      const int w = lane + 32 * t;
      if (w < words) {
        reinterpret_cast<float2*>(dk_row)[w] = make_float2(p.scale * dk[i][2 * t], p.scale * dk[i][2 * t + 1]);
        reinterpret_cast<float2*>(dv_row)[w] = make_float2(dv[i][2 * t], dv[i][2 * t + 1]);
      }
    }
  }
}

__global__ void f32_pair_to_bf16_kernel(const float* __restrict__ a, const float* __restrict__ b, bf16* __restrict__ a_out,
                                        bf16* __restrict__ b_out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    a_out[i] = to_bf(a[i]);
    b_out[i] = to_bf(b[i]);
  }
}

// The launch geometry and the per-row runs, shared by forward and backward.
struct Plan {
  AttnParams p{};
  dim3 grid;
  BufferPtr runs;
};

Plan plan(const Context& ctx, const int32_t* key_offsets, const int32_t* key_rows, const AttentionShape& s) {
  require(s.q_heads > 0 && s.kv_heads > 0 && s.q_heads % s.kv_heads == 0,
          "attention: query heads must be a positive multiple of key/value heads");
  require(s.head_dim >= 2 && s.head_dim % 2 == 0, "attention: head_dim must be even");
  if (s.head_dim > 256)
    throw Error(ErrorCode::UNSUPPORTED, "attention: head_dim " + std::to_string(s.head_dim) + " is over the CUDA kernel's 256");
  Plan pl;
  AttnParams& p = pl.p;
  p.key_offsets = key_offsets;
  p.key_rows = key_rows;
  p.q_rows = s.q_rows;
  p.kv_rows = s.kv_rows;
  p.q_heads = s.q_heads;
  p.kv_heads = s.kv_heads;
  p.head_dim = s.head_dim;
  p.group = s.q_heads / s.kv_heads;
  p.heads_per_block = std::min(p.group, kPairs);
  p.head_chunks = static_cast<int>(ceil_div(p.group, p.heads_per_block));
  p.rows_per_block = std::max(1, kPairs / p.heads_per_block);
  p.scale = s.scale;
  p.softcap = s.softcap;
  pl.grid = dim3(static_cast<unsigned>(ceil_div(s.q_rows, p.rows_per_block)), static_cast<unsigned>(s.kv_heads * p.head_chunks));

  pl.runs = ctx.scratch(2 * sizeof(int32_t) * s.q_rows, "attention runs");
  int32_t* runs = Context::ptr<int32_t>(pl.runs);
  p.run_start = runs;
  p.run_len = runs + s.q_rows;
  attention_runs_kernel<<<static_cast<unsigned>(ceil_div(s.q_rows * 32, 256)), 256, 0, ctx.stream>>>(
      key_offsets, key_rows, s.q_rows, runs, runs + s.q_rows);
  DIFFUSE_LAUNCH_CHECK(attention_runs_kernel);
  return pl;
}

template <typename Kernel>
void launch(const Context& ctx, Kernel kernel, const Plan& pl, size_t shared, dim3 grid) {
  set_dynamic_shared(kernel, shared, "attention");
  kernel<<<grid, kThreads, shared, ctx.stream>>>(pl.p);
  DIFFUSE_LAUNCH_CHECK(kernel);
}
template <typename Kernel>
void launch(const Context& ctx, Kernel kernel, const Plan& pl, size_t shared) {
  launch(ctx, kernel, pl, shared, pl.grid);
}

}  // namespace

void attention_forward(const Context& ctx, const bf16* q, const bf16* k, const bf16* v, const int32_t* key_offsets,
                       const int32_t* key_rows, const AttentionShape& s, bf16* out, float* lse) {
  if (s.q_rows <= 0) return;
  Plan pl = plan(ctx, key_offsets, key_rows, s);
  pl.p.q = q;
  pl.p.k = k;
  pl.p.v = v;
  pl.p.o = out;
  pl.p.lse_out = lse;
  const size_t shared = sizeof(bf16) * (kPairs * s.head_dim + 2 * kTile * (s.head_dim + 2));
  if (s.head_dim <= 64) launch(ctx, attention_forward_kernel<1>, pl, shared);
  else if (s.head_dim <= 128) launch(ctx, attention_forward_kernel<2>, pl, shared);
  else launch(ctx, attention_forward_kernel<4>, pl, shared);
}

void attention_backward(const Context& ctx, const bf16* dout, const bf16* q, const bf16* k, const bf16* v,
                        const bf16* out, const float* lse, const int32_t* key_offsets, const int32_t* key_rows,
                        const AttentionShape& s, bf16* dq, bf16* dk, bf16* dv) {
  const int64_t kv_elems = s.kv_rows * s.kv_heads * s.head_dim;
  if (s.q_rows <= 0) {
    if (kv_elems > 0) {
      DIFFUSE_CUDA_CHECK(cudaMemsetAsync(dk, 0, kv_elems * sizeof(bf16), ctx.stream));
      DIFFUSE_CUDA_CHECK(cudaMemsetAsync(dv, 0, kv_elems * sizeof(bf16), ctx.stream));
    }
    return;
  }
  Plan pl = plan(ctx, key_offsets, key_rows, s);
  // Written whole by the key-major kernel, then the tails added by the query-major one.
  BufferPtr acc = ctx.scratch(2 * sizeof(float) * kv_elems, "attention key/value gradient accumulators");
  float* dk_acc = Context::ptr<float>(acc);
  float* dv_acc = dk_acc + kv_elems;
  pl.p.q = q;
  pl.p.k = k;
  pl.p.v = v;
  pl.p.out = out;
  pl.p.dout = dout;
  pl.p.lse = lse;
  pl.p.dq = dq;
  pl.p.dk_acc = dk_acc;
  pl.p.dv_acc = dv_acc;
  const size_t shared = sizeof(bf16) * (2 * kPairs * s.head_dim + 2 * kTile * (s.head_dim + 2));
  const size_t shared_dkdv = shared + sizeof(float) * 2 * kPairs * kTile;
  const dim3 by_key(static_cast<unsigned>(ceil_div(s.kv_rows, kTile)), static_cast<unsigned>(s.kv_heads));
  if (s.head_dim <= 64) {
    if (s.kv_rows > 0) launch(ctx, attention_backward_dkdv_kernel<1>, pl, shared_dkdv, by_key);
    launch(ctx, attention_backward_kernel<1>, pl, shared);
  } else if (s.head_dim <= 128) {
    if (s.kv_rows > 0) launch(ctx, attention_backward_dkdv_kernel<2>, pl, shared_dkdv, by_key);
    launch(ctx, attention_backward_kernel<2>, pl, shared);
  } else {
    if (s.kv_rows > 0) launch(ctx, attention_backward_dkdv_kernel<4>, pl, shared_dkdv, by_key);
    launch(ctx, attention_backward_kernel<4>, pl, shared);
  }
  f32_pair_to_bf16_kernel<<<grid_for(kv_elems, 256, ctx), 256, 0, ctx.stream>>>(dk_acc, dv_acc, dk, dv, kv_elems);
  DIFFUSE_LAUNCH_CHECK(f32_pair_to_bf16_kernel);
}

}  // namespace cuda
}  // namespace diffuse
