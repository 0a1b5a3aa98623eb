// The single-threaded GEMM machinery behind cpu/gemm.h, written once over a small vector
// interface `V` and instantiated per instruction set: gemm_avx512.cpp (16 floats a register),
// gemm_avx2.cpp (8) and gemm.cpp (4, GCC vector extensions: SSE2 on any x86-64, NEON elsewhere).
// gemm.cpp picks one set at run time and hands blocks of C to the thread pool; nothing
// here touches threads or the C++ library, so no inline function compiled with AVX-512 can be
// picked by the linker for code that runs on a machine without it (everything below the
// Problem / Kernels declarations lives in an anonymous namespace, one copy per ISA).
//
// Three ways to compute a block of C:
//   * packed: GotoBLAS / BLIS loops. A is packed once per K block into MR-tall k-major
//     slivers that all tasks share; each task packs an NR-wide k-major sliver of B just
//     before using it (both zero-padded), and an MR x NR register tile accumulates outer
//     products a_k b_k^T. The optional second operand pair (the K extension) is packed into
//     the same slivers right after the first, so it costs a few more iterations of the same
//     micro-kernel.
//   * direct: C has a few rows (one or two register tiles) and B is k-major (nn, tn): B is
//     used once or twice, so the micro-kernel reads it in place instead of packing it.
//   * dot: for skinny shapes (few rows of C with an n-major B, or few columns) where packing
//     would cost more than it saves. Each C element is a dot product over K of an A row and a
//     B row, both contiguous (nt; nn first transposes its narrow B into scratch).
// All three add the optional bias row while storing C, on the first K block only.
//
// A stored B (compact weights, cpu/gemm.h StoredMatrix) is widened to f32 right before the
// same code reads it: on the packed path nt sliver by sliver (into a sliver-sized buffer the
// transpose reads) and nn a column block x K block panel at a time, on the direct path such a
// panel too, on the dot path a group of rows. Every path then does the
// same arithmetic in the same order as with B in f32, so the results are bit-identical.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "io/dequant.h"

#if defined(__SSE__)
#include <immintrin.h>
#endif

namespace diffuse {
namespace gemm_detail {

// One GEMM, C = beta C + sum over segments of op(A_s) op(B_s). Segment 1 has K columns,
// segment 2 (the K extension, never for tn) K2 columns and always the nt / nn layout.
struct Problem {
  int64_t M = 0, N = 0, K = 0, K2 = 0;
  const float* A = nullptr;   // a_kmajor ? [K x M] : [M x K]
  int64_t lda = 0;
  const float* B = nullptr;   // b_nmajor ? [N x K] : [K x N]
  int64_t ldb = 0;
  const float* A2 = nullptr;  // [M x K2]
  int64_t lda2 = 0;
  const float* B2 = nullptr;  // b_nmajor ? [N x K2] : [K2 x N]
  int64_t ldb2 = 0;
  bool a_kmajor = false;      // tn
  bool b_nmajor = false;      // nt
  float beta = 0.f;           // 0 or 1 here (the driver folds any other value into C first)
  const float* bias = nullptr;  // [N], added to every row of C, or null
  float* C = nullptr;
  int64_t ldc = 0;
  // Segment 1 of B kept in a storage type (B is then null): row r (b_nmajor: column r of C;
  // else: k = r) at b_stored + r * b_row_bytes. Never for tn.
  const void* b_stored = nullptr;
  StorageType b_type = StorageType::F32;
  int64_t b_row_bytes = 0;
};

// Widens columns [c0, c1) of rows [r0, r1) of the stored B into dst, rows ldd floats apart.
inline void widen_panel(const Problem& p, int64_t r0, int64_t r1, int64_t c0, int64_t c1, float* dst, int64_t ldd) {
  for (int64_t r = r0; r < r1; ++r)
    widen_range(p.b_type, static_cast<const char*>(p.b_stored) + r * p.b_row_bytes, c0, c1, dst + (r - r0) * ldd);
}

// The bytes of columns [c0, c1) of rows [r0, r1) of the stored B, asked for (prefetched) a few
// cache lines at a time while the micro-kernels run, so that the next widening finds them in
// cache. The weights are read once a call, too many for the caches, and a sliver's or panel's
// rows are pieces of longer rows, which the hardware prefetchers do not follow: without this,
// widening mostly waits on DRAM.
class StoredPrefetch {
 public:
  // Starts on a new range, to be spread over `calls` calls of issue().
  void start(const Problem& p, int64_t r0, int64_t r1, int64_t c0, int64_t c1, int64_t calls) {
    const int64_t bv = storage_block_values(p.b_type), bb = storage_block_bytes(p.b_type);
    base_ = static_cast<const char*>(p.b_stored);
    row_bytes_ = p.b_row_bytes, from_ = c0 / bv * bb, to_ = (c1 + bv - 1) / bv * bb, row_ = r0;
    r1_ = r0 < r1 && c0 < c1 ? r1 : r0;
    line_ = first_line();
    const int64_t lines = (r1_ - r0) * ((to_ - from_) / 64 + 2);
    per_call_ = (lines + calls - 1) / (calls > 0 ? calls : 1);
  }
  void issue() {
    for (int64_t n = 0; n < per_call_ && row_ < r1_; ++n) {
      __builtin_prefetch(reinterpret_cast<const void*>(line_), 0, 3);
      line_ += 64;
      if (line_ >= reinterpret_cast<uintptr_t>(base_ + row_ * row_bytes_ + to_) && ++row_ < r1_) line_ = first_line();
    }
  }

 private:
  uintptr_t first_line() const { return reinterpret_cast<uintptr_t>(base_ + row_ * row_bytes_ + from_) & ~uintptr_t{63}; }
  const char* base_ = nullptr;
  int64_t row_bytes_ = 0, from_ = 0, to_ = 0, row_ = 0, r1_ = 0, per_call_ = 0;
  uintptr_t line_ = 0;
};

// One instruction set's kernels, each run on the calling thread.
//   packed path: pack_a packs row slivers of A (all K blocks, see packed_a_offset) into a
//   buffer shared by the tasks; packed computes C[m0:m1, n0:n1] from it, packing each B
//   sliver into its own `bsliver` (packed_scratch() floats: kc * nr, then, 64-byte aligned,
//   a stored B's widened rows: kc * nr for nt, a kc * nc panel for nn) just before use.
//   direct / dot: compute C[m0:m1, n0:n1] with `scratch` of *_scratch() floats. `direct` takes
//   at most kDirectGroups * mr rows and a k-major B (nn, tn); `dot` takes nt or nn.
// Scratch is 64-byte aligned.
struct Kernels {
  const char* name;
  int mr, nr;      // packed register tile
  int64_t kc, mc;  // packed K block (a B sliver of kc x nr stays in L1) and row block (L2)
  int64_t nc;      // packed column block (and the width of a stored nn B's widened panel)
  using Block = void (*)(const Problem&, int64_t m0, int64_t m1, int64_t n0, int64_t n1, float* scratch);
  using Scratch = size_t (*)(const Problem&, int64_t rows, int64_t cols);
  void (*pack_a)(const Problem&, int64_t i0, int64_t i1, int64_t kblock, float* apack);
  void (*packed)(const Problem&, const float* apack, int64_t m0, int64_t m1, int64_t n0, int64_t n1,
                 float* bsliver);
  size_t (*packed_scratch)(const Problem&);
  Block direct;
  Scratch direct_scratch;
  Block dot;
  Scratch dot_scratch;
};

const Kernels* kernels_generic();
#if defined(__x86_64__)
const Kernels* kernels_avx2();
const Kernels* kernels_avx512();
#endif

namespace {

inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }
inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }
// How many of a vector's lanes a count covers: n clamped to [0, W].
template <class V>
inline int clamp_lanes(int n) { return n < 0 ? 0 : n > V::W ? V::W : n; }

// The packed path's register tile and cache blocking, per instruction set:
//   MR x (NV vectors): the register tile;
//   KC: K block, so that one NR x KC sliver of B stays in L1 while A slivers stream by;
//   MC, NC: row and column blocks, so that the packed MC x KC block of A and the MC x NC
//   block of C it updates stay in L2 together (C passes through once per K block). MC is the
//   least: cpu/gemm.cpp takes more rows where the processor's L2 is larger.
template <int MR_, int NV_, int64_t KC_, int64_t MC_, int64_t NC_>
struct PackedShape {
  static constexpr int MR = MR_, NV = NV_;
  static constexpr int64_t KC = KC_, MC = MC_, NC = NC_;
};

// Even K blocks no larger than KC: K = 580 gives 2 x 290 rather than 384 + 196.
inline int64_t k_block(int64_t Kt, int64_t KC) { return ceil_div(Kt, ceil_div(Kt, KC)); }

// Where K block b's row sliver starting at row i lies in the shared packed A: blocks of
// Mp x kc_even floats (Mp = M rounded up to MR), slivers of MR x kc_b inside.
inline int64_t packed_a_offset(int64_t Mp, int64_t kc_even, int64_t b, int64_t kc_b, int64_t i) {
  return b * Mp * kc_even + i * kc_b;
}

#if defined(__AVX__)
// dst[c * ldd + r] = src[r * ld + c] for an 8 x 8 block, in registers.
inline void transpose8_avx(const float* src, int64_t ld, float* dst, int64_t ldd) {
  __m256 r[8], t[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * ld);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
    r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
    r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  for (int i = 0; i < 4; ++i) {
    _mm256_storeu_ps(dst + i * ldd, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
    _mm256_storeu_ps(dst + (i + 4) * ldd, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
  }
}
#endif

// dst[c * ldd + r] = src[r * ld + c] for a 4 x 4 block (SSE on x86-64, scalar elsewhere).
inline void transpose4(const float* src, int64_t ld, float* dst, int64_t ldd) {
#if defined(__SSE__)
  __m128 r0 = _mm_loadu_ps(src), r1 = _mm_loadu_ps(src + ld);
  __m128 r2 = _mm_loadu_ps(src + 2 * ld), r3 = _mm_loadu_ps(src + 3 * ld);
  _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
  _mm_storeu_ps(dst, r0);
  _mm_storeu_ps(dst + ldd, r1);
  _mm_storeu_ps(dst + 2 * ldd, r2);
  _mm_storeu_ps(dst + 3 * ldd, r3);
#else
  for (int c = 0; c < 4; ++c)
    for (int r = 0; r < 4; ++r) dst[c * ldd + r] = src[r * ld + c];
#endif
}

// ------------------------------------------------------------------------------- packing
// dst[k * P + r] = src[r * ld + k] for r < R, k < kc; zero for R <= r < P.  (rows -> k-major)
// Rows go 8 at a time through the ISA's 8 x 8 transpose, then 4 at a time, then singly.
template <class V>
void pack_transpose(const float* src, int64_t ld, int R, int P, int64_t kc, float* dst) {
  int r0 = 0;
  for (; r0 + 8 <= R; r0 += 8) {
    int64_t k0 = 0;
    for (; k0 + 8 <= kc; k0 += 8) V::transpose8(src + r0 * ld + k0, ld, dst + k0 * P + r0, P);
    for (; k0 < kc; ++k0)
      for (int r = r0; r < r0 + 8; ++r) dst[k0 * P + r] = src[r * ld + k0];
  }
  for (; r0 + 4 <= R; r0 += 4) {
    int64_t k0 = 0;
    for (; k0 + 4 <= kc; k0 += 4) transpose4(src + r0 * ld + k0, ld, dst + k0 * P + r0, P);
    for (; k0 < kc; ++k0)
      for (int r = r0; r < r0 + 4; ++r) dst[k0 * P + r] = src[r * ld + k0];
  }
  for (int64_t k = 0; k < kc; ++k) {
    for (int r = r0; r < R; ++r) dst[k * P + r] = src[r * ld + k];
    for (int r = R; r < P; ++r) dst[k * P + r] = 0.f;
  }
}

// dst[k * P + r] = src[k * ld + r] for r < R, k < kc; zero for R <= r < P.  (k-major copy)
// Writes stay inside each row of P floats, which may be narrower than a vector (P = MR).
template <class V>
void pack_copy(const float* src, int64_t ld, int R, int P, int64_t kc, float* dst) {
  for (int64_t k = 0; k < kc; ++k) {
    const float* s = src + k * ld;
    float* d = dst + k * P;
    int r = 0;
    for (; r + V::W <= R; r += V::W) V::store(d + r, V::load(s + r));
    for (; r < P; r += V::W) {
      const int take = R - r, room = P - r < V::W ? P - r : V::W;
      const typename V::reg v = take >= V::W ? V::load(s + r) : take > 0 ? V::load_n(s + r, take) : V::zero();
      if (room == V::W) V::store(d + r, v);
      else V::store_n(d + r, v, room);
    }
  }
}

// Packs columns [k0, k0 + kc) of the K-extended A (segment 1 then segment 2) for rows
// [i0, i0 + R) into one MR-tall sliver.
template <class V, int MR>
void pack_a_sliver(const Problem& p, int64_t i0, int R, int64_t k0, int64_t kc, float* dst) {
  const int64_t k1 = min64(k0 + kc, p.K);
  if (k0 < k1) {
    if (p.a_kmajor) pack_copy<V>(p.A + k0 * p.lda + i0, p.lda, R, MR, k1 - k0, dst);
    else pack_transpose<V>(p.A + i0 * p.lda + k0, p.lda, R, MR, k1 - k0, dst);
  }
  const int64_t e0 = max64(k0, p.K) - p.K, e1 = k0 + kc - p.K;
  if (e0 < e1)
    pack_transpose<V>(p.A2 + i0 * p.lda2 + e0, p.lda2, R, MR, e1 - e0, dst + (p.K + e0 - k0) * MR);
}

// Segment 2 (the K extension) of a B sliver: the part of K block [k0, k0 + kc) past K.
template <class V, int NR>
void pack_b2_sliver(const Problem& p, int64_t j0, int R, int64_t k0, int64_t kc, float* dst) {
  const int64_t e0 = max64(k0, p.K) - p.K, e1 = k0 + kc - p.K;
  if (e0 < e1) {
    float* d = dst + (p.K + e0 - k0) * NR;
    if (p.b_nmajor) pack_transpose<V>(p.B2 + j0 * p.ldb2 + e0, p.ldb2, R, NR, e1 - e0, d);
    else pack_copy<V>(p.B2 + e0 * p.ldb2 + j0, p.ldb2, R, NR, e1 - e0, d);
  }
}

// The same for B: columns [j0, j0 + R) of C, one NR-wide sliver. Segment 1 is read in place
// from b1, its element (column j0 of C, k0), rows ldb1 apart.
template <class V, int NR>
void pack_b_sliver(const Problem& p, const float* b1, int64_t ldb1, int64_t j0, int R, int64_t k0, int64_t kc,
                   float* dst) {
  const int64_t k1 = min64(k0 + kc, p.K);
  if (k0 < k1) {
    if (p.b_nmajor) pack_transpose<V>(b1, ldb1, R, NR, k1 - k0, dst);
    else pack_copy<V>(b1, ldb1, R, NR, k1 - k0, dst);
  }
  pack_b2_sliver<V, NR>(p, j0, R, k0, kc, dst);
}

// The same for a stored nt B: the sliver's R rows of segment 1 are widened into `rows`
// (R x kc floats, in L1 / L2) and transposed from there. (Rows of the K blocks start on
// block boundaries, so no block is decoded twice.)
template <class V, int NR>
void pack_b_sliver_stored_nt(const Problem& p, int64_t j0, int R, int64_t k0, int64_t kc, float* rows, float* dst) {
  const int64_t k1 = min64(k0 + kc, p.K);
  if (k0 < k1) {
    widen_panel(p, j0, j0 + R, k0, k1, rows, k1 - k0);
    pack_transpose<V>(rows, k1 - k0, R, NR, k1 - k0, dst);
  }
  pack_b2_sliver<V, NR>(p, j0, R, k0, kc, dst);
}

// ------------------------------------------------------------------------------- micro-kernels
// Stores an MR x NR register tile into C[m x n] (m <= MR, n <= NR): C = acc, or C += acc when
// `add`, plus bias[0..n) on every row when bias is not null.
template <class V, int MR, int NV>
inline void store_tile(typename V::reg (&acc)[MR][NV], float* c, int64_t ldc, int m, int n, bool add,
                       const float* bias) {
  constexpr int NR = NV * V::W;
  if (bias) {
    for (int v = 0; v < NV; ++v) {
      const typename V::reg b = V::load_n(bias + v * V::W, clamp_lanes<V>(n - v * V::W));
      for (int i = 0; i < MR; ++i) acc[i][v] = V::add(acc[i][v], b);
    }
  }
  if (m == MR && n == NR) {
    for (int i = 0; i < MR; ++i)
      for (int v = 0; v < NV; ++v) {
        float* ci = c + i * ldc + v * V::W;
        V::store(ci, add ? V::add(V::load(ci), acc[i][v]) : acc[i][v]);
      }
    return;
  }
  for (int i = 0; i < MR; ++i) {
    if (i >= m) break;
    for (int v = 0; v < NV; ++v) {
      const int cols = clamp_lanes<V>(n - v * V::W);
      float* ci = c + i * ldc + v * V::W;
      if (cols == V::W) V::store(ci, add ? V::add(V::load(ci), acc[i][v]) : acc[i][v]);
      else if (cols > 0) V::store_n(ci, add ? V::add(V::load_n(ci, cols), acc[i][v]) : acc[i][v], cols);
    }
  }
}

template <class V, int MR, int NV>
inline void prefetch_tile(const float* c, int64_t ldc, int m, int n) {
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; j += 16) V::prefetch(c + i * ldc + j);
}

// acc += sum over kc steps of a[k*MR + i] b[k*ldb + j]: packed A, B rows ldb apart (NR for a
// packed sliver), whole vectors. (No masked loads in here: GCC takes the masked-load builtins
// for possible stores and would then keep the accumulators in memory.)
template <class V, int MR, int NV>
inline void outer_products(typename V::reg (&acc)[MR][NV], int64_t kc, const float* __restrict a,
                           const float* __restrict b, int64_t ldb) {
  for (int64_t k = 0; k < kc; ++k) {
    typename V::reg bv[NV];
    for (int v = 0; v < NV; ++v) bv[v] = V::load(b + k * ldb + v * V::W);
    for (int i = 0; i < MR; ++i) {
      const typename V::reg ai = V::broadcast(a + k * MR + i);
      for (int v = 0; v < NV; ++v) acc[i][v] = V::fma(ai, bv[v], acc[i][v]);
    }
  }
}

// C[m x n] (=, or += when add) the MR x NR tile sum_k a[k*MR + i] b[k*NR + j], both packed.
template <class V, int MR, int NV>
inline void micro_kernel(int64_t kc, const float* __restrict a, const float* __restrict b,
                         float* __restrict c, int64_t ldc, int m, int n, bool add, const float* bias) {
  typename V::reg acc[MR][NV];
  for (int i = 0; i < MR; ++i)
    for (int v = 0; v < NV; ++v) acc[i][v] = V::zero();
  prefetch_tile<V, MR, NV>(c, ldc, m, n);
  outer_products<V, MR, NV>(acc, kc, a, b, NV * V::W);
  store_tile<V, MR, NV>(acc, c, ldc, m, n, add, bias);
}

// Packs rows [i0, i1) of A's K block b (i0 a multiple of MR) into the shared packed A.
template <class V, class S>
void pack_a_rows(const Problem& p, int64_t i0, int64_t i1, int64_t b, float* apack) {
  const int64_t Kt = p.K + p.K2, kc_even = k_block(Kt, S::KC), pc = b * kc_even;
  const int64_t kc = min64(kc_even, Kt - pc), Mp = round_up(p.M, S::MR);
  for (int64_t i = i0; i < i1; i += S::MR)
    pack_a_sliver<V, S::MR>(p, i, static_cast<int>(min64(S::MR, p.M - i)), pc, kc,
                            apack + packed_a_offset(Mp, kc_even, b, kc, i));
}

// C[m0:m1, n0:n1] from the packed A (rows at most MC): jc (NC column blocks) > pc (K blocks) >
// jr (NR slivers of B, each packed into bsliver right before use and held in L1) > ir (MR
// slivers of A, from L2). A stored B is widened as it is packed: nt sliver by sliver; nn a
// K block x NC panel at a time (whole rows of blocks; a sliver is not a whole number of
// blocks), which the slivers are then copied from.
template <class V, class S>
void packed_tile(const Problem& p, const float* apack, int64_t m0, int64_t m1, int64_t n0, int64_t n1,
                 float* bsliver) {
  constexpr int MR = S::MR, NV = S::NV, NR = NV * V::W;
  static_assert(S::NC % NR == 0, "column blocks are whole slivers");
  const int64_t Kt = p.K + p.K2, kc_even = k_block(Kt, S::KC), Mp = round_up(p.M, MR);
  float* widened = bsliver + round_up(kc_even * NR, 16);
  const int64_t row_slivers = ceil_div(m1 - m0, MR);
  StoredPrefetch ahead;
  for (int64_t jc = n0; jc < n1; jc += S::NC) {
    const int64_t jc_end = min64(n1, jc + S::NC);
    for (int64_t b = 0, pc = 0; pc < Kt; ++b, pc += kc_even) {
      const int64_t kc = min64(kc_even, Kt - pc);
      const bool add = pc > 0 || p.beta != 0.f;
      // Segment 1 of this block of B (nn, or nt in f32): element (column jc of C, k = pc) and
      // its row stride.
      const int64_t k1 = min64(pc + kc, p.K);
      const float* b1 = nullptr;
      int64_t ldb1 = p.ldb;
      if (pc < k1 && p.b_stored && !p.b_nmajor) {
        widen_panel(p, pc, k1, jc, jc_end, widened, ldb1 = S::NC);
        b1 = widened;
        // The next panel: the next K block of these columns, else the first of the next ones.
        int64_t nk = pc + kc, nc = jc;
        if (nk >= p.K) nk = 0, nc = jc + S::NC;
        ahead.start(p, nk, min64(nk + kc_even, p.K), nc, min64(n1, nc + S::NC), ceil_div(jc_end - jc, NR) * row_slivers);
      } else if (pc < k1 && !p.b_stored) {
        b1 = p.b_nmajor ? p.B + jc * p.ldb + pc : p.B + pc * p.ldb + jc;
      }
      for (int64_t jr = jc; jr < jc_end; jr += NR) {
        const int n = static_cast<int>(min64(NR, jc_end - jr));
        if (p.b_stored && p.b_nmajor) {
          pack_b_sliver_stored_nt<V, NR>(p, jr, n, pc, kc, widened, bsliver);
          // The next sliver: the next one of this K block, else the first of the next K block,
          // else the first of the next column block.
          int64_t nr = jr + NR, nk = pc, ne = jc_end;
          if (nr >= jc_end) {
            nr = jc, nk = pc + kc;
            if (nk >= p.K) nr = jc + S::NC, nk = 0, ne = min64(n1, nr + S::NC);
          }
          ahead.start(p, nr, min64(nr + NR, ne), nk, min64(nk + kc_even, p.K), row_slivers);
        } else {
          const float* b1r = b1 ? (p.b_nmajor ? b1 + (jr - jc) * ldb1 : b1 + (jr - jc)) : nullptr;
          pack_b_sliver<V, NR>(p, b1r, ldb1, jr, n, pc, kc, bsliver);
        }
        const float* bias = pc == 0 && p.bias ? p.bias + jr : nullptr;
        for (int64_t ir = m0; ir < m1; ir += MR) {
          if (p.b_stored) ahead.issue();
          micro_kernel<V, MR, NV>(kc, apack + packed_a_offset(Mp, kc_even, b, kc, ir), bsliver,
                                  p.C + ir * p.ldc + jr, p.ldc, static_cast<int>(min64(MR, m1 - ir)), n, add, bias);
        }
      }
    }
  }
}

// Floats of a packed task's scratch: one B sliver, then for a stored B the widened rows of
// one sliver (nt) or one panel (nn).
template <class V, class S>
size_t packed_scratch(const Problem& p) {
  const int64_t kc = k_block(p.K + p.K2, S::KC), NR = S::NV * V::W;
  return static_cast<size_t>(round_up(kc * NR, 16) + (p.b_stored ? kc * (p.b_nmajor ? NR : S::NC) : 0));
}

// ------------------------------------------------------------------------------- direct path
// The direct path takes at most kDirectGroups register tiles of rows.
constexpr int kDirectGroups = 2;

// Floats for direct_rows with either tile of direct_block: packed A rows, then one B strip.
template <class V, class S>
size_t direct_scratch(const Problem& p, int64_t rows, int64_t cols) {
  const int64_t kc = k_block(p.K + p.K2, S::KC);
  const int64_t mr = max64(S::MR, V::direct_mr), nr = max64(S::NV, V::direct_nv) * V::W;
  return static_cast<size_t>(kDirectGroups * mr * kc + kc * nr + (p.b_stored ? kc * S::NC : 0));
}

// C[m0:m1, n0:n1] for a few rows with B k-major (nn, tn), read in place: each B element is
// used by one or two register tiles only, so packing it would cost more than it saves. The
// A rows are packed per K block into MR-tall slivers; only a last, partial strip of B columns
// is copied (zero-padded) so that every load is a whole vector. A stored B is widened NC
// columns at a time into a panel the strips then read.
template <class V, int MR, int NV, int64_t KC, int64_t NC>
void direct_rows(const Problem& p, int64_t m0, int64_t m1, int64_t n0, int64_t n1, float* scratch) {
  constexpr int NR = NV * V::W;
  static_assert(NC % NR == 0, "panels are whole strips");
  const int64_t Kt = p.K + p.K2, kc_even = k_block(Kt, KC);
  float* edge = scratch + kDirectGroups * MR * kc_even;
  float* panel = edge + kc_even * NR;
  for (int64_t pc = 0; pc < Kt; pc += kc_even) {
    const int64_t kc = min64(kc_even, Kt - pc);
    for (int64_t i = m0; i < m1; i += MR)
      pack_a_sliver<V, MR>(p, i, static_cast<int>(min64(MR, m1 - i)), pc, kc, scratch + (i - m0) * kc);
    // This K block in B's two segments: [pc, k1) of B, then [e0, e1) of B2.
    const int64_t k1 = min64(pc + kc, p.K), kb = k1 > pc ? k1 - pc : 0;
    const int64_t e0 = max64(pc, p.K) - p.K, e1 = pc + kc - p.K, kb2 = e1 > e0 ? e1 - e0 : 0;
    const bool add = pc > 0 || p.beta != 0.f;
    const int64_t chunk = p.b_stored ? NC : n1 - n0;
    for (int64_t jc = n0; jc < n1; jc += chunk) {
    const int64_t jc_end = min64(n1, jc + chunk);
    if (kb && p.b_stored) widen_panel(p, pc, k1, jc, jc_end, panel, NC);
    for (int64_t j = jc; j < jc_end; j += NR) {
      const int n = static_cast<int>(min64(NR, jc_end - j));
      const float* b1 = p.b_stored ? panel + (j - jc) : p.B + pc * p.ldb + j;
      const float* b2 = p.B2 + e0 * p.ldb2 + j;
      int64_t ldb1 = p.b_stored ? NC : p.ldb, ldb2 = p.ldb2;
      if (n < NR) {
        if (kb) pack_copy<V>(b1, ldb1, n, NR, kb, edge);
        if (kb2) pack_copy<V>(b2, ldb2, n, NR, kb2, edge + kb * NR);
        b1 = edge, b2 = edge + kb * NR, ldb1 = ldb2 = NR;
      }
      const float* bias = pc == 0 && p.bias ? p.bias + j : nullptr;
      for (int64_t i = m0; i < m1; i += MR) {
        typename V::reg acc[MR][NV];
        for (int r = 0; r < MR; ++r)
          for (int v = 0; v < NV; ++v) acc[r][v] = V::zero();
        float* c = p.C + i * p.ldc + j;
        const int m = static_cast<int>(min64(MR, m1 - i));
        prefetch_tile<V, MR, NV>(c, p.ldc, m, n);
        const float* a = scratch + (i - m0) * kc;
        if (kb) outer_products<V, MR, NV>(acc, kb, a, b1, ldb1);
        if (kb2) outer_products<V, MR, NV>(acc, kb2, a + kb * MR, b2, ldb2);
        store_tile<V, MR, NV>(acc, c, p.ldc, m, n, add, bias);
      }
    }
    }
  }
}

// At most kDirectGroups * MR rows; up to V::direct_mr rows take a shorter, wider tile.
template <class V, class S>
void direct_block(const Problem& p, int64_t m0, int64_t m1, int64_t n0, int64_t n1, float* scratch) {
  if (m1 - m0 <= V::direct_mr) direct_rows<V, V::direct_mr, V::direct_nv, S::KC, S::NC>(p, m0, m1, n0, n1, scratch);
  else direct_rows<V, S::MR, S::NV, S::KC, S::NC>(p, m0, m1, n0, n1, scratch);
}

// ------------------------------------------------------------------------------- dot path
// One K segment of the dot path: rows of A and rows of B, both contiguous along k.
struct DotSegment {
  const float* a;   // row i of A at a + i * lda
  int64_t lda;
  const float* b;   // column j of C reads the B row at b + (j - b_first) * ldb
  int64_t ldb;
  int64_t b_first;
  int64_t k;
};

// C[i0 + i, j0 + j] (=, or += when add) sum over segments of a_row . b_row, plus bias[j0 + j]
// when given, for an MD x ND tile of which md x nd is stored. Rows past md / nd repeat the
// last valid row (never read out of bounds; their sums are dropped).
template <class V, int MD, int ND>
void dot_tile(const DotSegment* seg, int nseg, int64_t i0, int md, int64_t j0, int nd, float* c,
              int64_t ldc, bool add, const float* bias) {
  typename V::reg acc[MD][ND];
  for (int i = 0; i < MD; ++i)
    for (int j = 0; j < ND; ++j) acc[i][j] = V::zero();
  for (int s = 0; s < nseg; ++s) {
    const DotSegment& g = seg[s];
    const float* ar[MD];
    const float* br[ND];
    for (int i = 0; i < MD; ++i) ar[i] = g.a + (i0 + (i < md ? i : md - 1)) * g.lda;
    for (int j = 0; j < ND; ++j) br[j] = g.b + (j0 - g.b_first + (j < nd ? j : nd - 1)) * g.ldb;
    int64_t k = 0;
    for (; k + V::W <= g.k; k += V::W) {
      typename V::reg av[MD];
      for (int i = 0; i < MD; ++i) av[i] = V::load(ar[i] + k);
      for (int j = 0; j < ND; ++j) {
        const typename V::reg bj = V::load(br[j] + k);
        for (int i = 0; i < MD; ++i) acc[i][j] = V::fma(av[i], bj, acc[i][j]);
      }
    }
    if (k < g.k) {
      const int rest = static_cast<int>(g.k - k);
      typename V::reg av[MD];
      for (int i = 0; i < MD; ++i) av[i] = V::load_n(ar[i] + k, rest);
      for (int j = 0; j < ND; ++j) {
        const typename V::reg bj = V::load_n(br[j] + k, rest);
        for (int i = 0; i < MD; ++i) acc[i][j] = V::fma(av[i], bj, acc[i][j]);
      }
    }
  }
  for (int i = 0; i < md; ++i)
    for (int j = 0; j < nd; ++j) {
      float* cij = c + (i0 + i) * ldc + j0 + j;
      const float sum = V::hsum(acc[i][j]) + (bias ? bias[j0 + j] : 0.f);
      *cij = add ? *cij + sum : sum;
    }
}

// A stored nt B is widened kDotGroup rows (columns of C) at a time, or fewer when K is long:
// whole multiples of every dot tile width, so the tiles fall where they would in place.
constexpr int64_t kDotGroup = 96, kDotTileLcm = 24;
inline int64_t dot_group(int64_t K) {
  const int64_t fit = (int64_t{1} << 16) / (K > 0 ? K : 1) / kDotTileLcm * kDotTileLcm;
  return fit < kDotTileLcm ? kDotTileLcm : fit > kDotGroup ? kDotGroup : fit;
}

// Dot-path scratch: nn transposes its B (and B2) into N x (K + K2) rows (and widens a stored
// row's few columns first); a stored nt B takes a group of widened rows.
inline size_t dot_scratch(const Problem& p, int64_t rows, int64_t cols) {
  if (p.b_nmajor) return static_cast<size_t>(p.b_stored ? dot_group(p.K) * p.K + 16 : 16);
  return static_cast<size_t>(cols * (p.K + p.K2) + (p.b_stored ? cols : 0) + 16);
}

// C[m0:m1, n0:n1] by dot products (nt / nn only). The longer side streams past the shorter,
// which stays in cache: with few rows, B rows (the vocabulary when sampling) are read once
// for all of them; with few columns, B stays put while the rows of A go by.
template <class V, int MD, int ND>
void dot_tiles(const Problem& p, const DotSegment* seg, int nseg, int64_t m0, int64_t m1, int64_t n0,
               int64_t n1) {
  const bool add = p.beta != 0.f;
  auto tile = [&](int64_t i, int64_t j) {
    dot_tile<V, MD, ND>(seg, nseg, i, static_cast<int>(min64(MD, m1 - i)), j,
                        static_cast<int>(min64(ND, n1 - j)), p.C, p.ldc, add, p.bias);
  };
  if (m1 - m0 <= n1 - n0) {
    for (int64_t j = n0; j < n1; j += ND)
      for (int64_t i = m0; i < m1; i += MD) tile(i, j);
  } else {
    for (int64_t i = m0; i < m1; i += MD)
      for (int64_t j = n0; j < n1; j += ND) tile(i, j);
  }
}

// K + K2 > 0 (the driver handles an empty K).
template <class V>
void dot_block(const Problem& p, int64_t m0, int64_t m1, int64_t n0, int64_t n1, float* scratch) {
  DotSegment seg[2];
  int nseg = 0;
  // The tile shape follows the whole block, also when a stored B is taken a group at a time.
  auto tiles = [&, rows = m1 - m0, cols = n1 - n0](int64_t j0, int64_t j1) {
    if (rows == 1) dot_tiles<V, 1, V::dot_wide>(p, seg, nseg, m0, m1, j0, j1);
    else if (cols <= V::dot_narrow) dot_tiles<V, V::dot_md_narrow, V::dot_narrow>(p, seg, nseg, m0, m1, j0, j1);
    else dot_tiles<V, V::dot_md, V::dot_nd>(p, seg, nseg, m0, m1, j0, j1);
  };
  if (p.b_nmajor) {
    if (p.K > 0) seg[nseg++] = {p.A, p.lda, p.B, p.ldb, 0, p.K};
    if (p.K2 > 0) seg[nseg++] = {p.A2, p.lda2, p.B2, p.ldb2, 0, p.K2};
    if (p.b_stored && p.K > 0) {
      const int64_t group = dot_group(p.K);
      for (int64_t j0 = n0; j0 < n1; j0 += group) {
        const int64_t j1 = min64(n1, j0 + group);
        widen_panel(p, j0, j1, 0, p.K, scratch, p.K);
        seg[0] = {p.A, p.lda, scratch, p.K, j0, p.K};
        tiles(j0, j1);
      }
      return;
    }
  } else {
    // nn: columns n0..n1 of B (and B2) become rows of a [cols x (K + K2)] block.
    const int64_t Kt = p.K + p.K2, cols = n1 - n0;
    float* widened = scratch + cols * Kt;
    for (int64_t k = 0; k < p.K; ++k) {
      const float* src = widened;
      if (p.b_stored) widen_panel(p, k, k + 1, n0, n1, widened, cols);
      else src = p.B + k * p.ldb + n0;
      for (int64_t j = 0; j < cols; ++j) scratch[j * Kt + k] = src[j];
    }
    for (int64_t j = 0; j < cols; ++j)
      for (int64_t k = 0; k < p.K2; ++k) scratch[j * Kt + p.K + k] = p.B2[k * p.ldb2 + n0 + j];
    if (p.K > 0) seg[nseg++] = {p.A, p.lda, scratch, Kt, n0, p.K};
    if (p.K2 > 0) seg[nseg++] = {p.A2, p.lda2, scratch + p.K, Kt, n0, p.K2};
  }
  tiles(n0, n1);
}

}  // namespace
}  // namespace gemm_detail
}  // namespace diffuse
