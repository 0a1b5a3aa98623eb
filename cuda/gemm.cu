#include "gemm.cuh"

namespace diffuse {
namespace cuda {
namespace {

cudaDataType_t cuda_type(DType t) { return t == DType::BF16 ? CUDA_R_16BF : CUDA_R_32F; }

// The largest power of two (up to 256) that divides the address: cuBLASLt picks kernels by it.
uint32_t alignment_of(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  uint32_t align = 256;
  while (align > 1 && a % align != 0) align /= 2;
  return align;
}

const char* type_name(DType t) { return t == DType::BF16 ? "bf16" : "f32"; }

}  // namespace

GemmPlans::~GemmPlans() {
  for (auto& [key, plan] : plans_) {
    cublasLtMatrixLayoutDestroy(plan.a);
    cublasLtMatrixLayoutDestroy(plan.b);
    cublasLtMatrixLayoutDestroy(plan.c);
    cublasLtMatmulDescDestroy(plan.desc);
  }
}

GemmPlans::Plan& GemmPlans::get(const Context& ctx, const Key& key, int64_t M, int64_t N, int64_t K,
                                const GemmOperand& A, const GemmOperand& B, const GemmOutput& C, bool bias,
                                bool accumulate, Alignment align) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = plans_.find(key);
  if (it != plans_.end()) return it->second;

  // cuBLAS's A is our B and its B our A (see gemm.cuh).
  Plan p;
  const cublasOperation_t op_a = B.trans ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = A.trans ? CUBLAS_OP_T : CUBLAS_OP_N;
  DIFFUSE_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  DIFFUSE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof op_a));
  DIFFUSE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof op_b));
  if (bias) {
    const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    DIFFUSE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue));
  }
  DIFFUSE_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.a, cuda_type(B.type), B.trans ? K : N, B.trans ? N : K, B.ld));
  DIFFUSE_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.b, cuda_type(A.type), A.trans ? M : K, A.trans ? K : M, A.ld));
  DIFFUSE_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.c, cuda_type(C.type), N, M, C.ld));

  cublasLtMatmulPreference_t pref = nullptr;
  DIFFUSE_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t ws = ctx.lt_workspace_bytes;
  DIFFUSE_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
  // cuBLAS's A is our B, its B our A.
  DIFFUSE_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align.b, sizeof align.b));
  DIFFUSE_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align.a, sizeof align.a));
  DIFFUSE_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align.c, sizeof align.c));
  DIFFUSE_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align.c, sizeof align.c));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(ctx.lt, p.desc, p.a, p.b, p.c, p.c, pref, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (st != CUBLAS_STATUS_SUCCESS || found == 0) {
    cublasLtMatrixLayoutDestroy(p.a);
    cublasLtMatrixLayoutDestroy(p.b);
    cublasLtMatrixLayoutDestroy(p.c);
    cublasLtMatmulDescDestroy(p.desc);
    throw Error(ErrorCode::DEVICE, "cuBLASLt has no algorithm for a " + std::to_string(M) + "x" + std::to_string(N) + "x" +
                                       std::to_string(K) + " GEMM (" + type_name(A.type) + " x " + type_name(B.type) + " -> " +
                                       type_name(C.type) + (accumulate ? ", accumulating" : "") + ", status " +
                                       std::to_string(static_cast<int>(st)) + ")");
  }
  p.algo = result.algo;
  return plans_.emplace(key, p).first->second;
}

void gemm(const Context& ctx, int64_t M, int64_t N, int64_t K, const GemmOperand& A, const GemmOperand& B,
          const GemmOutput& C, float alpha, float beta, const void* bias) {
  if (M <= 0 || N <= 0) return;
  require(K > 0, "gemm: the shared dimension must be positive");
  const GemmPlans::Alignment align{alignment_of(A.ptr), alignment_of(B.ptr),
                                   std::min(alignment_of(C.ptr), bias ? alignment_of(bias) : 256u)};
  const int flags = (A.trans ? 1 : 0) | (B.trans ? 2 : 0) | static_cast<int>(A.type) << 2 | static_cast<int>(B.type) << 3 |
                    static_cast<int>(C.type) << 4 | (bias ? 32 : 0) | (beta != 0.f ? 64 : 0);
  const GemmPlans::Key key{M, N, K, flags, A.ld, B.ld, C.ld, align.a, align.b, align.c};
  GemmPlans::Plan& p = ctx.gemm->get(ctx, key, M, N, K, A, B, C, bias != nullptr, beta != 0.f, align);
  if (bias) DIFFUSE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
  DIFFUSE_CUBLAS_CHECK(cublasLtMatmul(ctx.lt, p.desc, &alpha, B.ptr, p.a, A.ptr, p.b, &beta, C.ptr, p.c, C.ptr, p.c, &p.algo,
                                      ctx.lt_workspace, ctx.lt_workspace_bytes, ctx.stream));
}

}  // namespace cuda
}  // namespace diffuse
