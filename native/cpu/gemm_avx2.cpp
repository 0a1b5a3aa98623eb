// The AVX2 + FMA instantiation of the GEMM kernels (compiled with -mavx2 -mfma).
// Register tile 4 x 24: 12 ymm accumulators, 3 B loads and 4 broadcasts per k (4 rows also
// let A be packed with 4 x 4 transposes).
#include "cpu/gemm_kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>

namespace diffuse {
namespace gemm_detail {
namespace {

alignas(32) const int32_t kMaskTable[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

struct Avx2 {
  using reg = __m256;
  static constexpr int W = 8;
  static __m256i mask(int n) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kMaskTable + 8 - n)); }
  static reg zero() { return _mm256_setzero_ps(); }
  static reg load(const float* p) { return _mm256_loadu_ps(p); }
  static reg load_n(const float* p, int n) { return _mm256_maskload_ps(p, mask(n)); }
  static void store(float* p, reg v) { _mm256_storeu_ps(p, v); }
  static void store_n(float* p, reg v, int n) { _mm256_maskstore_ps(p, mask(n), v); }
  static reg broadcast(const float* p) { return _mm256_set1_ps(*p); }
  static reg fma(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
  static reg add(reg a, reg b) { return _mm256_add_ps(a, b); }
  static float hsum(reg v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static void prefetch(const float* p) { _mm_prefetch(reinterpret_cast<const char*>(p), _MM_HINT_T0); }
  static void transpose8(const float* s, int64_t ld, float* d, int64_t ldd) { transpose8_avx(s, ld, d, ldd); }
  // direct path for at most 4 rows: the packed tile
  static constexpr int direct_mr = 4, direct_nv = 3;
  // dot path (16 ymm registers): 3 x 4 tiles, 1 x 8 for a single row
  static constexpr int dot_md = 3, dot_nd = 4, dot_md_narrow = 3, dot_narrow = 4, dot_wide = 8;
};

using Shape = PackedShape<4, 3, 256, 384, 576>;

constexpr Kernels kAvx2{"avx2", Shape::MR, Shape::NV * Avx2::W, Shape::KC, Shape::MC, Shape::NC,
                          &pack_a_rows<Avx2, Shape>, &packed_tile<Avx2, Shape>, &packed_scratch<Avx2, Shape>,
                          &direct_block<Avx2, Shape>, &direct_scratch<Avx2, Shape>,
                          &dot_block<Avx2>, &dot_scratch};

}  // namespace

const Kernels* kernels_avx2() { return &kAvx2; }

}  // namespace gemm_detail
}  // namespace diffuse
#endif
