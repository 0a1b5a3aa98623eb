// Widening stored weights to f32: IEEE halves, bfloat16, and GGUF's block-quantised types.
// GGUF block layouts (32 values a block):
//   Q8_0: f16 d, int8 q[32]                 x = d q
//   Q4_0: f16 d, u8 q[16] (two nibbles)      x_j = d (lo_j - 8),  x_{j+16} = d (hi_j - 8)
//   Q4_1: f16 d, f16 m, u8 q[16]             x_j = d lo_j + m,    x_{j+16} = d hi_j + m
//   Q5_0, Q5_1: as Q4 with a fifth bit from a 32-bit mask; Q4_K, Q5_K, Q6_K: 256-value
//   super-blocks with 6-bit scales (the ggml reference layouts).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace diffuse {

enum class StorageType { F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K };

// Parses "F32", "Q4_1", … ; throws Error(UNSUPPORTED) naming the type otherwise.
StorageType storage_type_from_name(const std::string& name);
// Values per block and bytes per block (1 and the element size for the plain types).
int64_t storage_block_values(StorageType type);
int64_t storage_block_bytes(StorageType type);
// Bytes that n values occupy; n must be a multiple of the block size.
int64_t storage_bytes(StorageType type, int64_t n);

float f16_to_f32(uint16_t h);
float bf16_to_f32(uint16_t h);

// Widens n values (a multiple of the block size) from src to dst, over the thread pool.
void dequantize(StorageType type, const void* src, float* dst, int64_t n);

// Widens values [c0, c1) of one stored row (which starts on a block boundary) into dst, on
// the calling thread: the same numbers dequantize() gives. The GEMM's packing and the
// embedding read compact weights through it. A block the range cuts is decoded whole and
// the needed part copied.
void widen_range(StorageType type, const void* row, int64_t c0, int64_t c1, float* dst);

// Stores n values (a multiple of the block size) in `type`, on the calling thread: halves
// and bfloat16 rounded to nearest even, every block type as ggml's reference quantizers
// (quantize_row_*_ref, no importance matrix) store it, byte for byte: the same float
// operations in the same order (this file is built for baseline x86-64, so nothing is
// contracted to an FMA, as in ggml's own baseline build). The K-quants search scales as
// ggml does (make_qkx2_quants for Q4_K / Q5_K, make_qx_quants for Q6_K's 16-value groups).
void quantize_row(StorageType type, const float* src, void* dst, int64_t n);

// "F32", "Q4_1", … : the name storage_type_from_name() reads.
const char* storage_type_name(StorageType type);

// The index of the first of n stored values (a multiple of the block size) that widens to NaN
// or ±Inf, or -1 when every one is finite. Reads the stored bytes, not a widened copy: plain
// types by their exponent bits, block types by their f16 scales (a block's values are finite
// exactly when its scales are), so it costs a fraction of a widening pass.
int64_t first_non_finite(StorageType type, const void* src, int64_t n);

}  // namespace diffuse
