#include "io/dequant.h"

#include <atomic>
#include <cmath>
#include <cstring>

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

float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1F;
  uint32_t mant = h & 0x3FF;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: renormalise
      exp = 127 - 15 + 1;
      while ((mant & 0x400) == 0) {
        mant <<= 1;
        --exp;
      }
      bits = sign | (exp << 23) | ((mant & 0x3FF) << 13);
    }
  } else if (exp == 0x1F) {
    bits = sign | 0x7F800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float out;
  std::memcpy(&out, &bits, sizeof out);
  return out;
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
