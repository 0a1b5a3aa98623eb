// Single-precision GEMM for the CPU engine: packed panels, an AVX-512 / AVX2 micro-kernel
// picked at run time (a portable one otherwise), spread over the thread pool.
//
//   sgemm_nt:  C[M x N] = beta C + A[M x K] . B[N x K]^T      (y = x W^T)
//   sgemm_nn:  C[M x N] = beta C + A[M x K] . B[K x N]        (dx = dy W)
//   sgemm_tn:  C[M x N] = beta C + A[K x M]^T . B[K x N]      (reductions over rows: dA, dB)
//
// beta is 0 (overwrite; C need not be initialised and is never read) or 1 (accumulate); any
// other value scales C first, in a separate pass. Leading dimensions are in elements. Any
// shape is fine, including M, N or K of 0 or 1. The optional `extra` work is done in the same
// pass over C's tiles:
//   * an operand pair that extends the shared dimension K: the product gains A2[M x K2] . B2^T
//     (nt: B2 is [N x K2]) or A2[M x K2] . B2 (nn: B2 is [K2 x N]). That is how a LoRA term
//     rides along with its base GEMM;
//   * a bias row: C[i, j] += bias[j] for every row i.
// The instruction set is chosen once, at the first call: the best this processor has, or a
// lesser one that DIFFUSE_CPU_ISA (avx2 | generic) names, where the processor has it.
#pragma once

#include <cstdint>

#include "io/dequant.h"

namespace diffuse {

// A frozen operand kept in its storage type (io/dequant.h): row r starts at data + r * row_bytes
// and holds whole blocks. The GEMM widens it to f32 as it packs (or reads) it, to exactly the
// values dequantize() gives, so a product with a stored B is bit-identical to the same product
// with B widened beforehand. F32 storage takes the plain path.
struct StoredMatrix {
  const void* data = nullptr;
  StorageType type = StorageType::F32;
  int64_t row_bytes = 0;
  // The rows from r on.
  StoredMatrix rows_from(int64_t r) const {
    return {static_cast<const char*>(data) + r * row_bytes, type, row_bytes};
  }
};

struct GemmExtra {
  const float* A2 = nullptr;
  int64_t lda2 = 0;
  const float* B2 = nullptr;
  int64_t ldb2 = 0;
  int64_t K2 = 0;
  const float* bias = nullptr;  // [N], or null
};

void sgemm_nt(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
              int64_t ldb, float beta, float* C, int64_t ldc, const GemmExtra* extra = nullptr);
void sgemm_nn(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
              int64_t ldb, float beta, float* C, int64_t ldc, const GemmExtra* extra = nullptr);
// The same with B stored: nt reads B [N x K], nn reads B [K x N], rows as above.
void sgemm_nt(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const StoredMatrix& B,
              float beta, float* C, int64_t ldc, const GemmExtra* extra = nullptr);
void sgemm_nn(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const StoredMatrix& B,
              float beta, float* C, int64_t ldc, const GemmExtra* extra = nullptr);
void sgemm_tn(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
              int64_t ldb, float beta, float* C, int64_t ldc);

// The instruction set the micro-kernel uses on this machine: "avx512", "avx2" or "generic".
const char* gemm_isa();

}  // namespace diffuse
