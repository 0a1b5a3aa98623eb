// The AVX-512 instantiation of the GEMM kernels (compiled with -mavx512f/bw/dq/vl -mfma).
// Register tile 8 x 48: 24 zmm accumulators, 3 B loads and 8 broadcasts per k.
#include "cpu/gemm_kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>

namespace diffuse {
namespace gemm_detail {
namespace {

struct Avx512 {
  using reg = __m512;
  static constexpr int W = 16;
  static __mmask16 mask(int n) { return static_cast<__mmask16>((1u << n) - 1u); }
  static reg zero() { return _mm512_setzero_ps(); }
  static reg load(const float* p) { return _mm512_loadu_ps(p); }
  static reg load_n(const float* p, int n) { return _mm512_maskz_loadu_ps(mask(n), p); }
  static void store(float* p, reg v) { _mm512_storeu_ps(p, v); }
  static void store_n(float* p, reg v, int n) { _mm512_mask_storeu_ps(p, mask(n), v); }
  static reg broadcast(const float* p) { return _mm512_set1_ps(*p); }
  static reg fma(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
  static reg add(reg a, reg b) { return _mm512_add_ps(a, b); }
  // Folds halves within the register (zero-masked shuffles: GCC 12 warns about the
  // uninitialised pass-through of the plain reduce / cast / shuffle intrinsics).
  static float hsum(reg v) {
    v = _mm512_add_ps(v, _mm512_maskz_shuffle_f32x4(0xFFFF, v, v, 0x4E));  // 256-bit halves
    v = _mm512_add_ps(v, _mm512_maskz_shuffle_f32x4(0xFFFF, v, v, 0xB1));  // 128-bit lanes
    v = _mm512_add_ps(v, _mm512_maskz_permute_ps(0xFFFF, v, 0x4E));        // 64-bit pairs
    v = _mm512_add_ps(v, _mm512_maskz_permute_ps(0xFFFF, v, 0xB1));        // neighbours
    return _mm512_cvtss_f32(v);
  }
  static void prefetch(const float* p) { _mm_prefetch(reinterpret_cast<const char*>(p), _MM_HINT_T0); }
  static void transpose8(const float* s, int64_t ld, float* d, int64_t ldd) { transpose8_avx(s, ld, d, ldd); }
  // direct path for at most 4 rows: a 4 x 64 tile
  static constexpr int direct_mr = 4, direct_nv = 4;
  // dot path: 4 x 6 tiles; 6 x 4 when C has at most 4 columns; 1 x 8 for a single row
  static constexpr int dot_md = 4, dot_nd = 6, dot_md_narrow = 6, dot_narrow = 4, dot_wide = 8;
};

using Shape = PackedShape<8, 3, 256, 384, 576>;

constexpr Kernels kAvx512{"avx512", Shape::MR, Shape::NV * Avx512::W, Shape::KC, Shape::MC, Shape::NC,
                          &pack_a_rows<Avx512, Shape>, &packed_tile<Avx512, Shape>, &packed_scratch<Avx512, Shape>,
                          &direct_block<Avx512, Shape>, &direct_scratch<Avx512, Shape>,
                          &dot_block<Avx512>, &dot_scratch};

}  // namespace

const Kernels* kernels_avx512() { return &kAvx512; }

}  // namespace gemm_detail
}  // namespace diffuse
#endif
