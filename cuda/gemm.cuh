// Row-major GEMM on cuBLASLt (the CUDA twin of cpu/gemm.h): bf16 or f32 operands, fp32
// accumulation, an optional bias epilogue.
//
//   C[M x N] = alpha op(A) op(B) + beta C (+ bias[N] on every row)
//   op(A) = A [M x K] (lda)        or, with trans_a, A^T where A is stored [K x M]
//   op(B) = B [K x N] (ldb)        or, with trans_b, B^T where B is stored [N x K]
//
// cuBLASLt is column-major, so the call computes C^T = op(B)^T op(A)^T with the operands
// swapped. A matmul description, its layouts and the heuristic's algorithm are made once per
// shape / type / alignment and cached: the graph repeats the same shapes every step.
#pragma once

#include <map>
#include <mutex>
#include <tuple>

#include "common.cuh"

namespace diffuse {
namespace cuda {

enum class DType : int { BF16 = 0, F32 = 1 };

struct GemmOperand {
  const void* ptr = nullptr;
  DType type = DType::BF16;
  int64_t ld = 0;
  bool trans = false;
};

struct GemmOutput {
  void* ptr = nullptr;
  DType type = DType::BF16;
  int64_t ld = 0;
};

class GemmPlans {
 public:
  ~GemmPlans();
  struct Plan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
  };
  // Alignments (bytes) of the A, B and C (and bias) pointers, which cuBLASLt chooses kernels by.
  struct Alignment {
    uint32_t a, b, c;
  };
  // M, N, K, flags (transposes, types, bias, accumulate), lda, ldb, ldc, alignments.
  using Key = std::tuple<int64_t, int64_t, int64_t, int, int64_t, int64_t, int64_t, uint32_t, uint32_t, uint32_t>;
  Plan& get(const Context& ctx, const Key& key, int64_t M, int64_t N, int64_t K, const GemmOperand& A,
            const GemmOperand& B, const GemmOutput& C, bool bias, bool accumulate, Alignment align);

 private:
  std::mutex mutex_;
  std::map<Key, Plan> plans_;
};

void gemm(const Context& ctx, int64_t M, int64_t N, int64_t K, const GemmOperand& A, const GemmOperand& B,
          const GemmOutput& C, float alpha, float beta, const void* bias = nullptr);

}  // namespace cuda
}  // namespace diffuse
