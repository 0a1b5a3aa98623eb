#include "io/dequant.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "cpu/simd.h"
#include "cpu/thread_pool.h"
#include "engine/errors.h"

namespace diffuse {
namespace {

uint16_t load_u16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t load_u32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}

// The 6-bit scale and min of sub-block j of a Q4_K / Q5_K super-block.
void scale_min_k4(int j, const uint8_t* q, uint8_t& d, uint8_t& m) {
  if (j < 4) {
    d = q[j] & 63;
    m = q[j + 4] & 63;
  } else {
    d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

void block_q8_0(const uint8_t* b, float* y) {
  const float d = f16_to_f32(load_u16(b));
  const int8_t* q = reinterpret_cast<const int8_t*>(b + 2);
  for (int j = 0; j < 32; ++j) y[j] = d * q[j];
}

void block_q4_0(const uint8_t* b, float* y) {
  const float d = f16_to_f32(load_u16(b));
  const uint8_t* q = b + 2;
  for (int j = 0; j < 16; ++j) {
    y[j] = d * ((q[j] & 0xF) - 8);
    y[j + 16] = d * ((q[j] >> 4) - 8);
  }
}

void block_q4_1(const uint8_t* b, float* y) {
  const float d = f16_to_f32(load_u16(b));
  const float m = f16_to_f32(load_u16(b + 2));
  const uint8_t* q = b + 4;
  for (int j = 0; j < 16; ++j) {
    y[j] = d * (q[j] & 0xF) + m;
    y[j + 16] = d * (q[j] >> 4) + m;
  }
}

void block_q5_0(const uint8_t* b, float* y) {
  const float d = f16_to_f32(load_u16(b));
  const uint32_t qh = load_u32(b + 2);
  const uint8_t* q = b + 6;
  for (int j = 0; j < 16; ++j) {
    const int hi0 = ((qh >> j) << 4) & 0x10;
    const int hi1 = (qh >> (j + 12)) & 0x10;
    y[j] = d * (((q[j] & 0xF) | hi0) - 16);
    y[j + 16] = d * (((q[j] >> 4) | hi1) - 16);
  }
}

void block_q5_1(const uint8_t* b, float* y) {
  const float d = f16_to_f32(load_u16(b));
  const float m = f16_to_f32(load_u16(b + 2));
  const uint32_t qh = load_u32(b + 4);
  const uint8_t* q = b + 8;
  for (int j = 0; j < 16; ++j) {
    const int hi0 = ((qh >> j) << 4) & 0x10;
    const int hi1 = (qh >> (j + 12)) & 0x10;
    y[j] = d * ((q[j] & 0xF) | hi0) + m;
    y[j + 16] = d * ((q[j] >> 4) | hi1) + m;
  }
}

void block_q4_k(const uint8_t* b, float* y) {
  const float d = f16_to_f32(load_u16(b));
  const float dmin = f16_to_f32(load_u16(b + 2));
  const uint8_t* scales = b + 4;
  const uint8_t* q = b + 16;
  for (int j = 0, is = 0; j < 256; j += 64, is += 2, q += 32) {
    uint8_t sc, m;
    scale_min_k4(is, scales, sc, m);
    const float d1 = d * sc, m1 = dmin * m;
    scale_min_k4(is + 1, scales, sc, m);
    const float d2 = d * sc, m2 = dmin * m;
    for (int l = 0; l < 32; ++l) y[j + l] = d1 * (q[l] & 0xF) - m1;
    for (int l = 0; l < 32; ++l) y[j + 32 + l] = d2 * (q[l] >> 4) - m2;
  }
}

void block_q5_k(const uint8_t* b, float* y) {
  const float d = f16_to_f32(load_u16(b));
  const float dmin = f16_to_f32(load_u16(b + 2));
  const uint8_t* scales = b + 4;
  const uint8_t* qh = b + 16;
  const uint8_t* ql = b + 48;
  uint8_t u1 = 1, u2 = 2;
  for (int j = 0, is = 0; j < 256; j += 64, is += 2, ql += 32, u1 <<= 2, u2 <<= 2) {
    uint8_t sc, m;
    scale_min_k4(is, scales, sc, m);
    const float d1 = d * sc, m1 = dmin * m;
    scale_min_k4(is + 1, scales, sc, m);
    const float d2 = d * sc, m2 = dmin * m;
    for (int l = 0; l < 32; ++l) y[j + l] = d1 * ((ql[l] & 0xF) + ((qh[l] & u1) ? 16 : 0)) - m1;
    for (int l = 0; l < 32; ++l) y[j + 32 + l] = d2 * ((ql[l] >> 4) + ((qh[l] & u2) ? 16 : 0)) - m2;
  }
}

void block_q6_k(const uint8_t* b, float* y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
  const float d = f16_to_f32(load_u16(b + 208));
  for (int n = 0; n < 256; n += 128, ql += 64, qh += 32, sc += 8) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = static_cast<int>((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = static_cast<int>((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = static_cast<int>((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = static_cast<int>((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[n + l] = d * sc[is + 0] * q1;
      y[n + l + 32] = d * sc[is + 2] * q2;
      y[n + l + 64] = d * sc[is + 4] * q3;
      y[n + l + 96] = d * sc[is + 6] * q4;
    }
  }
}

using BlockFn = void (*)(const uint8_t*, float*);

// Byte offsets of a block's f16 scales (d, and m or dmin where there is one); -1 for none.
void block_scales(StorageType t, int& a, int& b) {
  switch (t) {
    case StorageType::Q4_1:
    case StorageType::Q5_1:
    case StorageType::Q4_K:
    case StorageType::Q5_K: a = 0, b = 2; return;
    case StorageType::Q6_K: a = 208, b = -1; return;
    default: a = 0, b = -1; return;  // Q8_0, Q4_0, Q5_0: d first
  }
}

bool f16_non_finite(uint16_t h) { return (h & 0x7C00) == 0x7C00; }

BlockFn block_fn(StorageType t) {
  switch (t) {
    case StorageType::Q8_0: return block_q8_0;
    case StorageType::Q4_0: return block_q4_0;
    case StorageType::Q4_1: return block_q4_1;
    case StorageType::Q5_0: return block_q5_0;
    case StorageType::Q5_1: return block_q5_1;
    case StorageType::Q4_K: return block_q4_k;
    case StorageType::Q5_K: return block_q5_k;
    case StorageType::Q6_K: return block_q6_k;
    default: return nullptr;
  }
}

}  // namespace

StorageType storage_type_from_name(const std::string& name) {
  static const struct {
    const char* name;
    StorageType type;
  } table[] = {{"F32", StorageType::F32},   {"F16", StorageType::F16},   {"BF16", StorageType::BF16},
               {"Q8_0", StorageType::Q8_0}, {"Q4_0", StorageType::Q4_0}, {"Q4_1", StorageType::Q4_1},
               {"Q5_0", StorageType::Q5_0}, {"Q5_1", StorageType::Q5_1}, {"Q4_K", StorageType::Q4_K},
               {"Q5_K", StorageType::Q5_K}, {"Q6_K", StorageType::Q6_K}};
  for (const auto& e : table)
    if (name == e.name) return e.type;
  throw Error(ErrorCode::UNSUPPORTED, "unsupported tensor storage type '" + name +
                                          "' (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K)");
}

int64_t storage_block_values(StorageType t) {
  switch (t) {
    case StorageType::F32:
    case StorageType::F16:
    case StorageType::BF16: return 1;
    case StorageType::Q4_K:
    case StorageType::Q5_K:
    case StorageType::Q6_K: return 256;
    default: return 32;
  }
}

int64_t storage_block_bytes(StorageType t) {
  switch (t) {
    case StorageType::F32: return 4;
    case StorageType::F16:
    case StorageType::BF16: return 2;
    case StorageType::Q8_0: return 34;
    case StorageType::Q4_0: return 18;
    case StorageType::Q4_1: return 20;
    case StorageType::Q5_0: return 22;
    case StorageType::Q5_1: return 24;
    case StorageType::Q4_K: return 144;
    case StorageType::Q5_K: return 176;
    case StorageType::Q6_K: return 210;
  }
  return 0;
}

int64_t storage_bytes(StorageType t, int64_t n) {
  return n / storage_block_values(t) * storage_block_bytes(t);
}

// Exact for every half, subnormals included: the 15 low bits moved into place are a float
// 2^-112 times the value, and the multiply by 2^112 is exact; infinities and NaNs (payload
// kept) get the all-ones exponent. Branch-free, so loops over it vectorise.
float f16_to_f32(uint16_t h) {
  const uint32_t magnitude = static_cast<uint32_t>(h & 0x7FFF) << 13;
  float f;
  std::memcpy(&f, &magnitude, sizeof f);
  f *= 0x1p112f;
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  if (magnitude >= 0x0F800000u) bits |= 0x7F800000u;  // exponent 31: Inf / NaN
  bits |= static_cast<uint32_t>(h & 0x8000) << 16;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

float bf16_to_f32(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float out;
  std::memcpy(&out, &bits, sizeof out);
  return out;
}

void dequantize(StorageType type, const void* src, float* dst, int64_t n) {
  const uint8_t* s = static_cast<const uint8_t*>(src);
  const int64_t bv = storage_block_values(type);
  require(n % bv == 0, "dequantize: value count is not a multiple of the block size");
  const int64_t blocks = n / bv, bb = storage_block_bytes(type);
  parallel_for(blocks, 1024, [&](int64_t begin, int64_t end) {
    switch (type) {
      case StorageType::F32: std::memcpy(dst + begin, s + begin * 4, (end - begin) * 4); break;
      case StorageType::F16:
        for (int64_t i = begin; i < end; ++i) dst[i] = f16_to_f32(load_u16(s + 2 * i));
        break;
      case StorageType::BF16:
        for (int64_t i = begin; i < end; ++i) dst[i] = bf16_to_f32(load_u16(s + 2 * i));
        break;
      default: {
        const BlockFn fn = block_fn(type);
        for (int64_t i = begin; i < end; ++i) fn(s + i * bb, dst + i * bv);
      }
    }
  });
}

namespace {

// widen_range on the calling thread, one block (or value) at a time.
void widen_range_scalar(StorageType type, const uint8_t* s, int64_t c0, int64_t c1, float* dst) {
  switch (type) {
    case StorageType::F32: std::memcpy(dst, s + c0 * 4, (c1 - c0) * 4); return;
    case StorageType::F16:
      for (int64_t i = c0; i < c1; ++i) dst[i - c0] = f16_to_f32(load_u16(s + 2 * i));
      return;
    case StorageType::BF16:
      for (int64_t i = c0; i < c1; ++i) dst[i - c0] = bf16_to_f32(load_u16(s + 2 * i));
      return;
    default: break;
  }
  const BlockFn fn = block_fn(type);
  const int64_t bv = storage_block_values(type), bb = storage_block_bytes(type);
  float block[256];
  for (int64_t b = c0 / bv; b * bv < c1; ++b) {
    const int64_t v0 = b * bv, v1 = v0 + bv;
    if (v0 >= c0 && v1 <= c1) {
      fn(s + b * bb, dst + (v0 - c0));
    } else {
      fn(s + b * bb, block);
      const int64_t from = v0 > c0 ? v0 : c0, to = v1 < c1 ? v1 : c1;
      std::memcpy(dst + (from - c0), block + (from - v0), (to - from) * sizeof(float));
    }
  }
}

// The same with vectors, one copy per instruction set (io/widen_lanes.inc): the GEMM widens
// every stored weight it reads through here, once per call.
#if defined(__x86_64__) || defined(__i386__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma,f16c")
namespace widen_avx512 {
#define DIFFUSE_WIDEN_LANES 16
#include "io/widen_lanes.inc"
#undef DIFFUSE_WIDEN_LANES
}  // namespace widen_avx512
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
namespace widen_avx2 {
#define DIFFUSE_WIDEN_LANES 8
#include "io/widen_lanes.inc"
#undef DIFFUSE_WIDEN_LANES
}  // namespace widen_avx2
#pragma GCC pop_options
#endif

using WidenFn = void (*)(StorageType, const uint8_t*, int64_t, int64_t, float*);

// The best copy for this processor, capped by DIFFUSE_CPU_ISA like the other kernels.
WidenFn choose_widen() {
#if defined(__x86_64__) || defined(__i386__)
  switch (simd::cpu_isa()) {
    case simd::Isa::avx512: return widen_avx512::widen_range;
    case simd::Isa::avx2: return widen_avx2::widen_range;
    case simd::Isa::generic: break;
  }
#endif
  return widen_range_scalar;
}

}  // namespace

void widen_range(StorageType type, const void* row, int64_t c0, int64_t c1, float* dst) {
  static const WidenFn widen = choose_widen();
  widen(type, static_cast<const uint8_t*>(row), c0, c1, dst);
}

namespace {

uint32_t float_bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, sizeof b);
  return b;
}
float bits_float(uint32_t b) {
  float f;
  std::memcpy(&f, &b, sizeof f);
  return f;
}
void store_u16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v & 0xFF);
  p[1] = static_cast<uint8_t>(v >> 8);
}

// Round to nearest even, as numpy's astype(float16) (F. Giesen's float_to_half_fast3_rtne).
uint16_t f32_to_f16(float x) {
  uint32_t f = float_bits(x);
  const uint32_t sign = f & 0x80000000u;
  f ^= sign;
  uint16_t o;
  if (f >= (127u + 16u) << 23) {
    o = f > 0x7F800000u ? 0x7E00 : 0x7C00;
  } else if (f < 113u << 23) {
    const float denorm_magic = bits_float(((127u - 15u) + (23u - 10u) + 1u) << 23);
    o = static_cast<uint16_t>(float_bits(bits_float(f) + denorm_magic) - float_bits(denorm_magic));
  } else {
    const uint32_t mant_odd = (f >> 13) & 1;
    f += (static_cast<uint32_t>(15 - 127) << 23) + 0xFFF + mant_odd;
    o = static_cast<uint16_t>(f >> 13);
  }
  return static_cast<uint16_t>(o | (sign >> 16));
}

uint16_t f32_to_bf16(float x) {
  const uint32_t b = float_bits(x);
  if ((b & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((b >> 16) | 0x40);  // quiet NaN
  return static_cast<uint16_t>((b + 0x7FFF + ((b >> 16) & 1)) >> 16);
}

void quantize_q8_0(const float* x, uint8_t* y) {
  float amax = 0.f;
  for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127.f, id = d != 0.f ? 1.f / d : 0.f;
  store_u16(y, f32_to_f16(d));
  for (int j = 0; j < 32; ++j) y[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(std::round(x[j] * id)));
}

// The first of a 32-value block's values of largest magnitude, with its sign (Q4_0 and Q5_0
// scale by it, as llama.cpp's reference quantizers do).
float largest_magnitude(const float* x) {
  float amax = 0.f, max = 0.f;
  for (int j = 0; j < 32; ++j)
    if (std::fabs(x[j]) > amax) amax = std::fabs(x[j]), max = x[j];
  return max;
}

void quantize_q4_0(const float* x, uint8_t* y) {
  const float max = largest_magnitude(x);
  const float d = max / -8.f, id = d != 0.f ? 1.f / d : 0.f;
  store_u16(y, f32_to_f16(d));
  for (int j = 0; j < 16; ++j) {
    const int q0 = std::min(15, static_cast<int>(static_cast<int8_t>(x[j] * id + 8.5f)));
    const int q1 = std::min(15, static_cast<int>(static_cast<int8_t>(x[j + 16] * id + 8.5f)));
    y[2 + j] = static_cast<uint8_t>(q0 | (q1 << 4));
  }
}

void quantize_q4_1(const float* x, uint8_t* y) {
  float min = x[0], max = x[0];
  for (int j = 1; j < 32; ++j) min = std::min(min, x[j]), max = std::max(max, x[j]);
  const float d = (max - min) / 15.f, id = d != 0.f ? 1.f / d : 0.f;
  store_u16(y, f32_to_f16(d));
  store_u16(y + 2, f32_to_f16(min));
  for (int j = 0; j < 16; ++j) {
    const int q0 = std::min(15, static_cast<int>(static_cast<int8_t>((x[j] - min) * id + 0.5f)));
    const int q1 = std::min(15, static_cast<int>(static_cast<int8_t>((x[j + 16] - min) * id + 0.5f)));
    y[4 + j] = static_cast<uint8_t>(q0 | (q1 << 4));
  }
}

void quantize_q5_0(const float* x, uint8_t* y) {
  const float max = largest_magnitude(x);
  const float d = max / -16.f, id = d != 0.f ? 1.f / d : 0.f;
  store_u16(y, f32_to_f16(d));
  uint32_t qh = 0;
  for (int j = 0; j < 16; ++j) {
    const int q0 = std::min(31, static_cast<int>(static_cast<int8_t>(x[j] * id + 16.5f)));
    const int q1 = std::min(31, static_cast<int>(static_cast<int8_t>(x[j + 16] * id + 16.5f)));
    y[6 + j] = static_cast<uint8_t>((q0 & 0xF) | ((q1 & 0xF) << 4));
    qh |= static_cast<uint32_t>((q0 >> 4) & 1) << j | static_cast<uint32_t>((q1 >> 4) & 1) << (j + 16);
  }
  for (int i = 0; i < 4; ++i) y[2 + i] = static_cast<uint8_t>(qh >> (8 * i));
}

void quantize_q5_1(const float* x, uint8_t* y) {
  float min = x[0], max = x[0];
  for (int j = 1; j < 32; ++j) min = std::min(min, x[j]), max = std::max(max, x[j]);
  const float d = (max - min) / 31.f, id = d != 0.f ? 1.f / d : 0.f;
  store_u16(y, f32_to_f16(d));
  store_u16(y + 2, f32_to_f16(min));
  uint32_t qh = 0;
  for (int j = 0; j < 16; ++j) {
    const int q0 = static_cast<uint8_t>((x[j] - min) * id + 0.5f);
    const int q1 = static_cast<uint8_t>((x[j + 16] - min) * id + 0.5f);
    y[8 + j] = static_cast<uint8_t>((q0 & 0xF) | ((q1 & 0xF) << 4));
    qh |= static_cast<uint32_t>((q0 >> 4) & 1) << j | static_cast<uint32_t>((q1 >> 4) & 1) << (j + 16);
  }
  for (int i = 0; i < 4; ++i) y[4 + i] = static_cast<uint8_t>(qh >> (8 * i));
}

// ggml's round-to-nearest (ties to even) through the 1.5 * 2^23 trick; |x| < 2^22.
int nearest_int(float x) {
  const uint32_t b = float_bits(x + 12582912.f);
  return static_cast<int>(b & 0x007FFFFF) - 0x00400000;
}

// ggml's make_qkx2_quants: a scale and min (returned as -min) for n values on levels
// 0..nmax, the least weighted squared error over nstep + 1 trial scales around the
// min/max one. L gets the levels.
float make_qkx2_quants(int n, int nmax, const float* x, const float* w, uint8_t* L, float* neg_min, uint8_t* Laux,
                       float rmin, float rdelta, int nstep) {
  float min = x[0], max = x[0], sum_w = w[0], sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    sum_w += w[i];
    sum_x += w[i] * x[i];
  }
  if (min > 0) min = 0;
  if (max == min) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    *neg_min = -min;
    return 0.f;
  }
  float iscale = nmax / (max - min), scale = 1 / iscale, best_error = 0;
  for (int i = 0; i < n; ++i) {
    L[i] = static_cast<uint8_t>(std::max(0, std::min(nmax, nearest_int(iscale * (x[i] - min)))));
    const float diff = scale * L[i] + min - x[i];
    best_error += w[i] * (diff * diff);
  }
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * is + nmax) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::max(0, std::min(nmax, nearest_int(iscale * (x[i] - min))));
      Laux[i] = static_cast<uint8_t>(l);
      sum_l += w[i] * l;
      sum_l2 += w[i] * l * l;
      sum_xl += w[i] * l * x[i];
    }
    const float D = sum_w * sum_l2 - sum_l * sum_l;
    if (D > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float cur_error = 0;
      for (int i = 0; i < n; ++i) {
        const float diff = this_scale * Laux[i] + this_min - x[i];
        cur_error += w[i] * (diff * diff);
      }
      if (cur_error < best_error) {
        std::memcpy(L, Laux, static_cast<size_t>(n));
        best_error = cur_error;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *neg_min = -min;
  return scale;
}

// The shared part of ggml's quantize_row_q4_K_ref / q5_K_ref: eight sub-blocks of 32 with a
// 6-bit scale and min each (relative to the f16 d and dmin at y[0..3], packed in y[4..15]),
// levels 0..nmax into L.
void quantize_k_scales(const float* x, uint8_t* y, int nmax, float rmin, int nstep, uint8_t* L) {
  float scales[8], mins[8], weights[32];
  uint8_t Laux[32];
  float max_scale = 0, max_min = 0;
  for (int j = 0; j < 8; ++j) {
    float sum_x2 = 0;
    for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
    const float av_x = std::sqrt(sum_x2 / 32);
    for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(x[32 * j + l]);
    scales[j] = make_qkx2_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, rmin, 0.1f, nstep);
    if (scales[j] > max_scale) max_scale = scales[j];
    if (mins[j] > max_min) max_min = mins[j];
  }
  const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f, inv_min = max_min > 0 ? 63.f / max_min : 0.f;
  uint8_t* sc = y + 4;
  std::memset(sc, 0, 12);
  for (int j = 0; j < 8; ++j) {
    const uint8_t ls = std::min<uint8_t>(63, static_cast<uint8_t>(nearest_int(inv_scale * scales[j])));
    const uint8_t lm = std::min<uint8_t>(63, static_cast<uint8_t>(nearest_int(inv_min * mins[j])));
    if (j < 4) {
      sc[j] = ls;
      sc[j + 4] = lm;
    } else {
      sc[j + 4] = static_cast<uint8_t>((ls & 0xF) | ((lm & 0xF) << 4));
      sc[j - 4] |= static_cast<uint8_t>((ls >> 4) << 6);
      sc[j] |= static_cast<uint8_t>((lm >> 4) << 6);
    }
  }
  store_u16(y, f32_to_f16(max_scale / 63.f));
  store_u16(y + 2, f32_to_f16(max_min / 63.f));
  const float d = f16_to_f32(load_u16(y)), dmin = f16_to_f32(load_u16(y + 2));
  for (int j = 0; j < 8; ++j) {
    uint8_t s, m;
    scale_min_k4(j, sc, s, m);
    const float dj = d * s;
    if (dj == 0.f) continue;
    const float mj = dmin * m;
    for (int i = 0; i < 32; ++i) L[32 * j + i] = static_cast<uint8_t>(std::max(0, std::min(nmax, nearest_int((x[32 * j + i] + mj) / dj))));
  }
}

void quantize_q4_k(const float* x, uint8_t* y) {
  uint8_t L[256];
  quantize_k_scales(x, y, 15, -1.f, 20, L);
  uint8_t* q = y + 16;
  for (int j = 0; j < 256; j += 64, q += 32)
    for (int l = 0; l < 32; ++l) q[l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 4));
}

void quantize_q5_k(const float* x, uint8_t* y) {
  uint8_t L[256];
  quantize_k_scales(x, y, 31, -0.5f, 15, L);
  uint8_t* qh = y + 16;
  uint8_t* ql = y + 48;
  std::memset(qh, 0, 32);
  uint8_t m1 = 1, m2 = 2;
  for (int n = 0; n < 256; n += 64, ql += 32, m1 <<= 2, m2 <<= 2)
    for (int j = 0; j < 32; ++j) {
      int l1 = L[n + j], l2 = L[n + j + 32];
      if (l1 > 15) l1 -= 16, qh[j] |= m1;
      if (l2 > 15) l2 -= 16, qh[j] |= m2;
      ql[j] = static_cast<uint8_t>(l1 | (l2 << 4));
    }
}

constexpr float kGroupMaxEps = 1e-15f;

// ggml's make_qx_quants with rmse_type 1 (weights x^2) and no importance: a signed scale
// for n values on levels -nmax..nmax-1, the best of 19 trial scales; L gets the levels + nmax.
float make_qx_quants(int n, int nmax, const float* x, uint8_t* L) {
  float max = 0, amax = 0;
  for (int i = 0; i < n; ++i)
    if (std::fabs(x[i]) > amax) amax = std::fabs(x[i]), max = x[i];
  if (amax < kGroupMaxEps) {
    std::memset(L, 0, static_cast<size_t>(n));
    return 0.f;
  }
  auto level = [&](float iscale, int i) { return std::max(-nmax, std::min(nmax - 1, nearest_int(iscale * x[i]))); };
  float iscale = -nmax / max, sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = level(iscale, i);
    L[i] = static_cast<uint8_t>(l + nmax);
    const float w = x[i] * x[i];
    sumlx += w * x[i] * l;
    suml2 += w * l * l;
  }
  float scale = suml2 ? sumlx / suml2 : 0.0f, best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(nmax + 0.1f * is) / max;
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
      const int l = level(iscale, i);
      const float w = x[i] * x[i];
      sumlx += w * x[i] * l;
      suml2 += w * l * l;
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; ++i) L[i] = static_cast<uint8_t>(level(iscale, i) + nmax);
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

void quantize_q6_k(const float* x, uint8_t* y) {
  float scales[16];
  uint8_t L[256];
  float max_scale = 0, max_abs_scale = 0;
  for (int ib = 0; ib < 16; ++ib) {
    scales[ib] = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib);
    if (std::fabs(scales[ib]) > max_abs_scale) max_abs_scale = std::fabs(scales[ib]), max_scale = scales[ib];
  }
  std::memset(y, 0, 210);
  if (max_abs_scale < kGroupMaxEps) return;
  int8_t* sc = reinterpret_cast<int8_t*>(y + 192);
  const float iscale = -128.f / max_scale;
  store_u16(y + 208, f32_to_f16(1 / iscale));
  for (int ib = 0; ib < 16; ++ib) sc[ib] = static_cast<int8_t>(std::min(127, nearest_int(iscale * scales[ib])));
  const float d = f16_to_f32(load_u16(y + 208));
  for (int j = 0; j < 16; ++j) {
    const float dj = d * sc[j];
    if (dj == 0.f) continue;
    for (int i = 0; i < 16; ++i) L[16 * j + i] = static_cast<uint8_t>(std::max(-32, std::min(31, nearest_int(x[16 * j + i] / dj))) + 32);
  }
  uint8_t* ql = y;
  uint8_t* qh = y + 128;
  for (int j = 0; j < 256; j += 128, ql += 64, qh += 32)
    for (int l = 0; l < 32; ++l) {
      ql[l] = static_cast<uint8_t>((L[j + l] & 0xF) | ((L[j + l + 64] & 0xF) << 4));
      ql[l + 32] = static_cast<uint8_t>((L[j + l + 32] & 0xF) | ((L[j + l + 96] & 0xF) << 4));
      qh[l] = static_cast<uint8_t>((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) | ((L[j + l + 96] >> 4) << 6));
    }
}

}  // namespace

void quantize_row(StorageType type, const float* src, void* dst, int64_t n) {
  uint8_t* d = static_cast<uint8_t*>(dst);
  const int64_t bv = storage_block_values(type), bb = storage_block_bytes(type);
  require(n % bv == 0, "quantize_row: value count is not a multiple of the block size");
  switch (type) {
    case StorageType::F32: std::memcpy(d, src, n * sizeof(float)); return;
    case StorageType::F16:
      for (int64_t i = 0; i < n; ++i) store_u16(d + 2 * i, f32_to_f16(src[i]));
      return;
    case StorageType::BF16:
      for (int64_t i = 0; i < n; ++i) store_u16(d + 2 * i, f32_to_bf16(src[i]));
      return;
    default: break;
  }
  void (*fn)(const float*, uint8_t*) = nullptr;
  switch (type) {
    case StorageType::Q8_0: fn = quantize_q8_0; break;
    case StorageType::Q4_0: fn = quantize_q4_0; break;
    case StorageType::Q4_1: fn = quantize_q4_1; break;
    case StorageType::Q5_0: fn = quantize_q5_0; break;
    case StorageType::Q5_1: fn = quantize_q5_1; break;
    case StorageType::Q4_K: fn = quantize_q4_k; break;
    case StorageType::Q5_K: fn = quantize_q5_k; break;
    case StorageType::Q6_K: fn = quantize_q6_k; break;
    default: break;
  }
  for (int64_t b = 0; b < n / bv; ++b) fn(src + b * bv, d + b * bb);
}

const char* storage_type_name(StorageType type) {
  switch (type) {
    case StorageType::F32: return "F32";
    case StorageType::F16: return "F16";
    case StorageType::BF16: return "BF16";
    case StorageType::Q8_0: return "Q8_0";
    case StorageType::Q4_0: return "Q4_0";
    case StorageType::Q4_1: return "Q4_1";
    case StorageType::Q5_0: return "Q5_0";
    case StorageType::Q5_1: return "Q5_1";
    case StorageType::Q4_K: return "Q4_K";
    case StorageType::Q5_K: return "Q5_K";
    case StorageType::Q6_K: return "Q6_K";
  }
  return "?";
}

int64_t first_non_finite(StorageType type, const void* src, int64_t n) {
  const uint8_t* s = static_cast<const uint8_t*>(src);
  const int64_t bv = storage_block_values(type);
  require(n % bv == 0, "first_non_finite: value count is not a multiple of the block size");
  const int64_t blocks = n / bv, bb = storage_block_bytes(type);
  std::atomic<int64_t> first{blocks};
  int sa = 0, sb = -1;
  block_scales(type, sa, sb);
  parallel_for(blocks, 1 << 14, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end && i < first.load(std::memory_order_relaxed); ++i) {
      bool bad;
      switch (type) {
        case StorageType::F32: bad = (load_u32(s + 4 * i) & 0x7F800000u) == 0x7F800000u; break;
        case StorageType::F16: bad = f16_non_finite(load_u16(s + 2 * i)); break;
        case StorageType::BF16: bad = (load_u16(s + 2 * i) & 0x7F80) == 0x7F80; break;
        default: bad = f16_non_finite(load_u16(s + i * bb + sa)) || (sb >= 0 && f16_non_finite(load_u16(s + i * bb + sb)));
      }
      if (bad) {
        int64_t seen = first.load();
        while (i < seen && !first.compare_exchange_weak(seen, i)) {
        }
        return;
      }
    }
  });
  const int64_t block = first.load();
  if (block == blocks) return -1;
  if (bv == 1) return block;
  float values[256];
  block_fn(type)(s + block * bb, values);
  for (int64_t j = 0; j < bv; ++j)
    if (!std::isfinite(values[j])) return block * bv + j;
  return block * bv;
}

}  // namespace diffuse
