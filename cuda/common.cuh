// Plumbing shared by every CUDA kernel file: error checks that throw diffuse::Error, bf16
// helpers, warp and block reductions, and the Context an op launcher runs in (the stream, the
// cuBLASLt handle and workspace, and scratch memory from the backend's caching allocator).
#pragma once

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <string>

#include "engine/backend.h"
#include "engine/errors.h"

namespace diffuse {
namespace cuda {

using bf16 = __nv_bfloat16;
using bf162 = __nv_bfloat162;

// ------------------------------------------------------------------------------- errors
[[noreturn]] inline void throw_cuda(cudaError_t e, const char* call, const char* file, int line) {
  throw Error(ErrorCode::DEVICE, std::string("CUDA error in ") + call + " (" + file + ":" + std::to_string(line) +
                                     "): " + cudaGetErrorName(e) + ": " + cudaGetErrorString(e));
}
[[noreturn]] inline void throw_cublas(cublasStatus_t s, const char* call, const char* file, int line) {
  throw Error(ErrorCode::DEVICE, std::string("cuBLAS error in ") + call + " (" + file + ":" + std::to_string(line) +
                                     "): status " + std::to_string(static_cast<int>(s)));
}
#define DIFFUSE_CUDA_CHECK(call)                                                    \
  do {                                                                              \
    const cudaError_t diffuse_err_ = (call);                                        \
    if (diffuse_err_ != cudaSuccess) ::diffuse::cuda::throw_cuda(diffuse_err_, #call, __FILE__, __LINE__); \
  } while (0)
#define DIFFUSE_CUBLAS_CHECK(call)                                                  \
  do {                                                                              \
    const cublasStatus_t diffuse_st_ = (call);                                      \
    if (diffuse_st_ != CUBLAS_STATUS_SUCCESS) ::diffuse::cuda::throw_cublas(diffuse_st_, #call, __FILE__, __LINE__); \
  } while (0)
// After every kernel launch: a bad configuration is reported here, a fault at the next sync.
#define DIFFUSE_LAUNCH_CHECK(kernel_name) DIFFUSE_CUDA_CHECK(cudaGetLastError())

// ------------------------------------------------------------------------------- context
// Scratch memory for an op's temporaries: a block from the backend's caching allocator,
// returned to the cache when the BufferPtr goes. Every op runs on the one stream, so a block
// freed while kernels that use it are still queued is only handed out to later work on the
// same stream, which runs after them.
using ScratchFn = std::function<BufferPtr(size_t bytes, const char* what)>;

class GemmPlans;  // gemm.cuh

// Which kernel computes a LoRA linear layer's big product (see lora_linear.cu).
enum class LinearKernel : int { CUBLASLT = 0, FUSED = 1 };

struct Context {
  cudaStream_t stream = nullptr;
  cublasLtHandle_t lt = nullptr;
  void* lt_workspace = nullptr;
  size_t lt_workspace_bytes = 0;
  GemmPlans* gemm = nullptr;
  int sm_count = 1;
  LinearKernel linear_kernel = LinearKernel::CUBLASLT;
  // Logits held at once by the chunked LM-head kernels (log-probs, sampling): 32 MiB of f32.
  int64_t chunk_logits = int64_t{1} << 23;
  ScratchFn scratch_fn;

  BufferPtr scratch(size_t bytes, const char* what) const { return scratch_fn(bytes, what); }
  template <typename T>
  static T* ptr(const BufferPtr& b) { return static_cast<T*>(b->data()); }
};

// Allows `kernel` `dynamic` bytes of dynamic shared memory. Launches whose dynamic shared memory
// depends on the shape call it whatever the size: the 48 KiB default and the opt-in limit both
// count the kernel's static shared memory too, so a size test on `dynamic` alone misses
// launches that only the static part pushes over. Throws UNSUPPORTED naming `what` when the
// two together exceed what the device offers a block.
template <typename Kernel>
void set_dynamic_shared(Kernel kernel, size_t dynamic, const char* what) {
  cudaFuncAttributes attr{};
  DIFFUSE_CUDA_CHECK(cudaFuncGetAttributes(&attr, kernel));
  int device = 0, optin = 0;
  DIFFUSE_CUDA_CHECK(cudaGetDevice(&device));
  DIFFUSE_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  if (attr.sharedSizeBytes + dynamic > static_cast<size_t>(optin))
    throw Error(ErrorCode::UNSUPPORTED, std::string(what) + ": the kernel needs " + std::to_string(attr.sharedSizeBytes + dynamic) +
                                            " bytes of shared memory per block, over this GPU's " + std::to_string(optin));
  DIFFUSE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(dynamic)));
}

// ------------------------------------------------------------------------------- helpers
inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }
inline bool aligned(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }
// Blocks for a grid-stride elementwise kernel over n items.
inline unsigned grid_for(int64_t n, int threads, const Context& ctx) {
  const int64_t want = ceil_div(std::max<int64_t>(n, 1), threads);
  return static_cast<unsigned>(std::min<int64_t>(want, static_cast<int64_t>(ctx.sm_count) * 32));
}

inline const bf16* act(const void* p) { return static_cast<const bf16*>(p); }
inline bf16* act(void* p) { return static_cast<bf16*>(p); }

__device__ __forceinline__ float to_f(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ bf16 to_bf(float x) { return __float2bfloat16(x); }

// Eight bf16 values moved as one 16-byte access.
struct alignas(16) Pack8 {
  bf162 h[4];
};
__device__ __forceinline__ void unpack8(const Pack8& p, float (&f)[8]) {
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 v = __bfloat1622float2(p.h[i]);
    f[2 * i] = v.x;
    f[2 * i + 1] = v.y;
  }
}
__device__ __forceinline__ Pack8 pack8(const float (&f)[8]) {
  Pack8 p;
#pragma unroll
  for (int i = 0; i < 4; ++i) p.h[i] = __floats2bfloat162_rn(f[2 * i], f[2 * i + 1]);
  return p;
}

// ------------------------------------------------------------------------------- reductions
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
// `shared` holds 32 values of T. Ends with a barrier, so it can be called again at once.
template <typename T>
__device__ __forceinline__ T block_sum(T v, T* shared) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  v = warp_sum(v);
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  T total = lane < warps ? shared[lane] : T(0);
  total = warp_sum(total);
  __syncthreads();
  return total;
}
__device__ __forceinline__ float block_max(float v, float* shared) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  v = warp_max(v);
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  float m = lane < warps ? shared[lane] : -INFINITY;
  m = warp_max(m);
  __syncthreads();
  return m;
}

}  // namespace cuda
}  // namespace diffuse
