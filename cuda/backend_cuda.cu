// The CUDA backend: bf16 activations and weights, f32 LoRA parameters, gradients, moments and
// statistics, fp32 accumulation everywhere. One stream per backend; every op is queued on it,
// so ops run in order and scratch memory can be recycled as soon as its last op is queued.
//
// Memory comes from a caching allocator over cudaMalloc (never managed memory): the graph
// allocates its activations per call, and the same sizes recur every step, so freed blocks
// are kept by size and handed out again. A cudaMalloc that fails frees the cache and retries
// once; if it fails again the allocation throws OUT_OF_MEMORY naming what it was for, and the
// backend stays usable.
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "backend_cuda.h"
#include "gemm.cuh"
#include "ops.cuh"

namespace diffuse {
namespace cuda {
namespace {

constexpr size_t kMiB = size_t{1} << 20;
constexpr size_t kLtWorkspaceBytes = 32 * kMiB;        // what cuBLASLt asks for on Hopper
constexpr int64_t kStagingFloats = int64_t{1} << 24;  // 64 MiB of f32 per host transfer chunk

class DeviceAllocator {
 public:
  DeviceAllocator(int device, std::string device_name) : device_(device), device_name_(std::move(device_name)) {}
  ~DeviceAllocator() { trim(); }

  // A block of at least `bytes`; `block` receives its real size, to give back with it.
  void* allocate(size_t bytes, const char* what, size_t& block) {
    const size_t want = rounded(bytes);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = free_.lower_bound(want);
      if (it != free_.end() && it->first <= want + want / 8) {
        block = it->first;
        void* p = it->second;
        free_.erase(it);
        cached_ -= block;
        note_in_use(block);
        return p;
      }
    }
    void* p = nullptr;
    cudaError_t e = cudaMalloc(&p, want);
    if (e == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      trim();
      e = cudaMalloc(&p, want);
    }
    if (e != cudaSuccess) {
      cudaGetLastError();
      if (e != cudaErrorMemoryAllocation) throw_cuda(e, "cudaMalloc", __FILE__, __LINE__);
      size_t free_bytes = 0, total_bytes = 0;
      cudaMemGetInfo(&free_bytes, &total_bytes);
      size_t held = 0;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        held = in_use_;
      }
      throw Error(ErrorCode::OUT_OF_MEMORY,
                  "out of GPU memory allocating " + std::string(what) + " (" + std::to_string(ceil_div(bytes, kMiB)) + " MiB) on " +
                      device_name_ + ": " + std::to_string(free_bytes / kMiB) + " MiB free of " + std::to_string(total_bytes / kMiB) +
                      " MiB, " + std::to_string(held / kMiB) +
                      " MiB held by this model; use fewer rows per batch, a lower activation budget, or a smaller model");
    }
    block = want;
    std::lock_guard<std::mutex> lock(mutex_);
    note_in_use(block);
    return p;
  }

  void release(void* p, size_t block) {
    std::lock_guard<std::mutex> lock(mutex_);
    free_.emplace(block, p);
    in_use_ -= block;
    cached_ += block;
  }

  // Returns every cached block to the driver (cudaFree waits for queued work first).
  void trim() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!free_.empty()) cudaSetDevice(device_);
    for (auto& [size, p] : free_) cudaFree(p);
    free_.clear();
    cached_ = 0;
  }

  void stats(size_t* in_use, size_t* peak, size_t* reserved) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (in_use) *in_use = in_use_;
    if (peak) *peak = peak_;
    if (reserved) *reserved = in_use_ + cached_;
  }
  void reset_peak() {
    std::lock_guard<std::mutex> lock(mutex_);
    peak_ = in_use_;
  }

 private:
  // Sizes are rounded to 1/8 of their leading power of two (at least 512 bytes), so a block
  // never wastes more than 12.5% and the sizes a step asks for map onto few classes.
  static size_t rounded(size_t bytes) {
    if (bytes <= 512) return 512;
    size_t top = 1;
    while (top <= bytes / 2) top *= 2;
    const size_t step = std::max<size_t>(512, top / 8);
    return (bytes + step - 1) / step * step;
  }
  void note_in_use(size_t block) {
    in_use_ += block;
    peak_ = std::max(peak_, in_use_);
  }

  int device_;
  std::string device_name_;
  std::mutex mutex_;
  std::multimap<size_t, void*> free_;
  size_t in_use_ = 0, cached_ = 0, peak_ = 0;
};

class CudaBuffer final : public Buffer {
 public:
  CudaBuffer(std::shared_ptr<DeviceAllocator> allocator, size_t bytes, const char* what)
      : allocator_(std::move(allocator)), bytes_(bytes) {
    data_ = allocator_->allocate(bytes, what, block_);
  }
  ~CudaBuffer() override { allocator_->release(data_, block_); }
  void* data() override { return data_; }
  size_t bytes() const override { return bytes_; }

 private:
  std::shared_ptr<DeviceAllocator> allocator_;  // outlives the backend while buffers live
  void* data_ = nullptr;
  size_t bytes_ = 0;
  size_t block_ = 0;
};

}  // namespace

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device) : device_(device) {
    DIFFUSE_CUDA_CHECK(cudaSetDevice(device_));
    cudaDeviceProp prop{};
    DIFFUSE_CUDA_CHECK(cudaGetDeviceProperties(&prop, device_));
    device_name_ = prop.name;
    require(prop.major >= 8, std::string("the CUDA backend needs compute capability 8.0 or newer (bf16 tensor cores); ") +
                                 device_name_ + " has " + std::to_string(prop.major) + "." + std::to_string(prop.minor));
    allocator_ = std::make_shared<DeviceAllocator>(device_, device_name_);
    DIFFUSE_CUDA_CHECK(cudaStreamCreateWithFlags(&ctx_.stream, cudaStreamNonBlocking));
    DIFFUSE_CUBLAS_CHECK(cublasLtCreate(&ctx_.lt));
    DIFFUSE_CUDA_CHECK(cudaMalloc(&ctx_.lt_workspace, kLtWorkspaceBytes));
    ctx_.lt_workspace_bytes = kLtWorkspaceBytes;
    ctx_.gemm = &plans_;
    ctx_.sm_count = prop.multiProcessorCount;
    ctx_.scratch_fn = [this](size_t bytes, const char* what) { return alloc(bytes, what); };
    const char* kernel = std::getenv("DIFFUSE_CUDA_LINEAR");
    if (kernel && *kernel) require(set_linear_kernel(kernel), std::string("DIFFUSE_CUDA_LINEAR='") + kernel + "' is not 'cublaslt' or 'fused'");
  }

  ~CudaBackend() override {
    cudaSetDevice(device_);
    cudaStreamSynchronize(ctx_.stream);
    cublasLtDestroy(ctx_.lt);
    cudaFree(ctx_.lt_workspace);
    cudaStreamDestroy(ctx_.stream);
  }

  bool set_linear_kernel(const std::string& name) {
    if (name == "cublaslt") ctx_.linear_kernel = LinearKernel::CUBLASLT;
    else if (name == "fused") ctx_.linear_kernel = LinearKernel::FUSED;
    else return false;
    return true;
  }
  void set_chunk_logits(int64_t n) { ctx_.chunk_logits = std::max<int64_t>(n, 1); }
  DeviceAllocator& allocator() { return *allocator_; }

  // ------------------------------------------------------------------ identity and memory
  std::string name() const override { return "cuda:" + device_name_; }
  size_t act_elem_size() const override { return sizeof(bf16); }
  size_t weight_elem_size() const override { return sizeof(bf16); }

  BufferPtr alloc(size_t bytes, const char* what) override {
    on();
    return std::make_unique<CudaBuffer>(allocator_, bytes, what);
  }
  void upload(void* dst, const void* host_src, size_t bytes) override {
    if (bytes == 0) return;
    on();
    DIFFUSE_CUDA_CHECK(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, ctx_.stream));
  }
  void download(void* host_dst, const void* src, size_t bytes) override {
    on();
    if (bytes > 0) DIFFUSE_CUDA_CHECK(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, ctx_.stream));
    DIFFUSE_CUDA_CHECK(cudaStreamSynchronize(ctx_.stream));
  }
  void copy(void* dst, const void* src, size_t bytes) override {
    if (bytes == 0) return;
    on();
    DIFFUSE_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, ctx_.stream));
  }
  void zero(void* dst, size_t bytes) override {
    if (bytes == 0) return;
    on();
    DIFFUSE_CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, ctx_.stream));
  }
  void synchronize() override {
    on();
    DIFFUSE_CUDA_CHECK(cudaStreamSynchronize(ctx_.stream));
  }
  size_t available_memory() override {
    on();
    size_t free = 0, total = 0;
    DIFFUSE_CUDA_CHECK(cudaMemGetInfo(&free, &total));
    size_t in_use = 0, reserved = 0;
    allocator_->stats(&in_use, nullptr, &reserved);
    return free + (reserved - in_use);
  }

  BufferPtr make_weight(const float* host, int64_t n, const char* what) override {
    BufferPtr buf = alloc(std::max<int64_t>(n, 1) * sizeof(bf16), what);
    act_from_f32(buf->data(), host, n);
    return buf;
  }
  BufferPtr make_weight_init(const std::string& kind, int64_t n, float std, uint64_t seed, const char* what) override {
    if (kind != "normal" && kind != "ones" && kind != "zeros")
      throw Error(ErrorCode::INVALID_ARGUMENT, std::string(what) + ": unknown initialiser '" + kind + "' (normal, ones, zeros)");
    BufferPtr buf = alloc(std::max<int64_t>(n, 1) * sizeof(bf16), what);
    bf16* w = buf->as<bf16>();
    if (kind == "normal") fill_normal(ctx_, w, n, std, seed);
    else fill_constant(ctx_, w, n, kind == "ones" ? 1.f : 0.f);
    return buf;
  }
  // Host f32 goes up in chunks through a device staging buffer and is rounded there.
  void act_from_f32(void* act_dst, const float* host, int64_t n) override {
    if (n <= 0) return;
    on();
    const int64_t chunk = std::min(n, kStagingFloats);
    BufferPtr stage = alloc(chunk * sizeof(float), "f32 staging for an upload");
    for (int64_t off = 0; off < n; off += chunk) {
      const int64_t c = std::min(chunk, n - off);
      DIFFUSE_CUDA_CHECK(cudaMemcpyAsync(stage->data(), host + off, c * sizeof(float), cudaMemcpyHostToDevice, ctx_.stream));
      f32_to_bf16(ctx_, stage->as<float>(), act(act_dst) + off, c);
    }
  }
  void act_to_f32(float* host, const void* act_src, int64_t n) override {
    on();
    if (n > 0) {
      const int64_t chunk = std::min(n, kStagingFloats);
      BufferPtr stage = alloc(chunk * sizeof(float), "f32 staging for a download");
      for (int64_t off = 0; off < n; off += chunk) {
        const int64_t c = std::min(chunk, n - off);
        bf16_to_f32(ctx_, act(act_src) + off, stage->as<float>(), c);
        DIFFUSE_CUDA_CHECK(cudaMemcpyAsync(host + off, stage->data(), c * sizeof(float), cudaMemcpyDeviceToHost, ctx_.stream));
      }
    }
    DIFFUSE_CUDA_CHECK(cudaStreamSynchronize(ctx_.stream));
  }

  // ------------------------------------------------------------------ ops
  void embedding_forward(const int32_t* tokens, const void* table, void* out, int64_t rows, int64_t dim) override {
    on();
    cuda::embedding_forward(ctx_, tokens, act(table), act(out), rows, dim);
  }
  void rmsnorm_forward(const void* x, const void* w, void* y, float* rstd, int64_t rows, int64_t dim, float eps) override {
    on();
    cuda::rmsnorm_forward(ctx_, act(x), act(w), act(y), rstd, rows, dim, eps);
  }
  void rmsnorm_backward(const void* dy, const void* x, const void* w, const float* rstd, void* dx, int64_t rows,
                        int64_t dim) override {
    on();
    cuda::rmsnorm_backward(ctx_, act(dy), act(x), act(w), rstd, act(dx), rows, dim);
  }
  void linear_forward(const void* x, const LinearWeight& W, const LoraParams& lora, void* y, float* u,
                      int64_t rows) override {
    on();
    cuda::linear_forward(ctx_, act(x), W, lora, act(y), u, rows);
  }
  void linear_backward(const void* dy, const void* x, const LinearWeight& W, const LoraParams& lora, const float* u,
                       void* dx, bool accumulate, const LoraGrads& grads, int64_t rows) override {
    on();
    cuda::linear_backward(ctx_, act(dy), act(x), W, lora, u, act(dx), accumulate, grads, rows);
  }
  void rope_forward(void* x, const int32_t* pos, const float* inv_freq, int64_t rows, const RopeShape& shape) override {
    on();
    cuda::rope_forward(ctx_, act(x), pos, inv_freq, rows, shape);
  }
  void rope_backward(void* dx, const int32_t* pos, const float* inv_freq, int64_t rows, const RopeShape& shape) override {
    on();
    cuda::rope_backward(ctx_, act(dx), pos, inv_freq, rows, shape);
  }
  void attention_forward(const void* q, const void* k, const void* v, const int32_t* key_offsets, const int32_t* key_rows,
                         const AttentionShape& shape, void* out, float* lse) override {
    on();
    cuda::attention_forward(ctx_, act(q), act(k), act(v), key_offsets, key_rows, shape, act(out), lse);
  }
  void attention_backward(const void* dout, const void* q, const void* k, const void* v, const void* out,
                          const float* lse, const int32_t* key_offsets, const int32_t* key_rows,
                          const AttentionShape& shape, void* dq, void* dk, void* dv) override {
    on();
    cuda::attention_backward(ctx_, act(dout), act(q), act(k), act(v), act(out), lse, key_offsets, key_rows, shape, act(dq),
                             act(dk), act(dv));
  }
  void swiglu_forward(const void* gate, const void* up, void* h, int64_t n) override {
    on();
    cuda::swiglu_forward(ctx_, act(gate), act(up), act(h), n);
  }
  void swiglu_backward(const void* dh, const void* gate, const void* up, void* dgate, void* dup, int64_t n) override {
    on();
    cuda::swiglu_backward(ctx_, act(dh), act(gate), act(up), act(dgate), act(dup), n);
  }
  void geglu_forward(const void* gate, const void* up, void* h, int64_t n) override {
    on();
    cuda::geglu_forward(ctx_, act(gate), act(up), act(h), n);
  }
  void geglu_backward(const void* dh, const void* gate, const void* up, void* dgate, void* dup, int64_t n) override {
    on();
    cuda::geglu_backward(ctx_, act(dh), act(gate), act(up), act(dgate), act(dup), n);
  }
  void add_inplace(void* y, const void* x, int64_t n) override {
    on();
    cuda::add_inplace(ctx_, act(y), act(x), n);
  }
  void scale_inplace(void* x, float s, int64_t n) override {
    on();
    cuda::scale_inplace(ctx_, act(x), s, n);
  }
  void logprobs_forward(const void* hidden, const LinearWeight& head, const EdgeSet& edges, const Objective& objective,
                        float* edge_logp, float* edge_loss, float* parent_stats, float* edge_stats) override {
    on();
    cuda::logprobs_forward(ctx_, act(hidden), head, edges, objective, edge_logp, edge_loss, parent_stats, edge_stats);
  }
  void logprobs_backward(const void* hidden, const LinearWeight& head, const EdgeSet& edges, const Objective& objective,
                         const float* parent_stats, const float* edge_stats, void* dhidden) override {
    on();
    cuda::logprobs_backward(ctx_, act(hidden), head, edges, objective, parent_stats, edge_stats, act(dhidden));
  }
  void sample(const void* hidden, const LinearWeight& head, const int32_t* rows, const uint64_t* streams, int64_t n,
              const SampleParams& params, uint64_t step, int32_t* tokens, float* logp) override {
    on();
    cuda::sample(ctx_, act(hidden), head, rows, streams, n, params, step, tokens, logp);
  }
  void adamw_update(float* param, const float* grad, float* m, float* v, int64_t n, const AdamWParams& params) override {
    on();
    cuda::adamw_update(ctx_, param, grad, m, v, n, params);
  }
  double sum_squares_many(const float* const* xs, const int64_t* ns, int count) override {
    on();
    return cuda::sum_squares_many(ctx_, xs, ns, count);
  }
  void pack_lora(const float* A, const float* B, int64_t in, int64_t out, int rank, BufferPtr& packed) override {
    const size_t bytes = static_cast<size_t>(lora_pad(rank) * (in + out)) * sizeof(bf16);
    if (!packed || packed->bytes() != bytes) packed = alloc(bytes, "LoRA A and B in bf16");
    on();
    cuda::pack_lora(ctx_, A, B, in, out, rank, packed->as<bf16>());
  }

 private:
  // The calling thread's current device: model calls arrive on worker threads.
  void on() const { DIFFUSE_CUDA_CHECK(cudaSetDevice(device_)); }

  int device_;
  std::string device_name_;
  std::shared_ptr<DeviceAllocator> allocator_;
  GemmPlans plans_;
  Context ctx_;
};

namespace {

void write_text(char* dst, size_t len, const std::string& text) {
  if (!dst || len == 0) return;
  const size_t n = std::min(len - 1, text.size());
  std::memcpy(dst, text.data(), n);
  dst[n] = '\0';
}

CudaBackend* as_cuda(Backend* backend) {
  require(backend != nullptr && backend->name().rfind("cuda:", 0) == 0, "not a CUDA backend");
  return static_cast<CudaBackend*>(backend);
}

}  // namespace
}  // namespace cuda
}  // namespace diffuse

using diffuse::cuda::as_cuda;
using diffuse::cuda::write_text;

extern "C" diffuse::Backend* diffuse_cuda_create_backend(int device, char* error, size_t error_len) {
  try {
    return new diffuse::cuda::CudaBackend(device);
  } catch (const std::exception& e) {
    write_text(error, error_len, e.what());
    return nullptr;
  }
}

extern "C" int diffuse_cuda_device_count(char* error, size_t error_len) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e == cudaSuccess) return n;
  cudaGetLastError();
  if (e == cudaErrorNoDevice) return 0;
  int driver = 0, runtime = 0;
  cudaDriverGetVersion(&driver);
  cudaRuntimeGetVersion(&runtime);
  auto version = [](int v) { return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10); };
  if (e == cudaErrorInsufficientDriver && driver == 0)
    write_text(error, error_len, "no NVIDIA driver is installed (libcuda.so.1 was not found)");
  else if (e == cudaErrorInsufficientDriver)
    write_text(error, error_len, "the NVIDIA driver supports CUDA " + version(driver) + ", older than the CUDA " + version(runtime) +
                                     " this backend was built with; update the driver");
  else
    write_text(error, error_len, std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e));
  return -1;
}

extern "C" int diffuse_cuda_device_name(int device, char* name, size_t len) {
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, device) != cudaSuccess) {
    cudaGetLastError();
    write_text(name, len, "unknown CUDA device");
    return -1;
  }
  write_text(name, len, prop.name);
  return 0;
}

extern "C" int diffuse_cuda_set_linear_kernel(diffuse::Backend* backend, const char* name) {
  return as_cuda(backend)->set_linear_kernel(name ? name : "") ? 0 : -1;
}

extern "C" void diffuse_cuda_set_chunk_logits(diffuse::Backend* backend, int64_t logits) {
  as_cuda(backend)->set_chunk_logits(logits);
}

extern "C" void diffuse_cuda_memory(diffuse::Backend* backend, size_t* in_use, size_t* peak, size_t* reserved) {
  as_cuda(backend)->allocator().stats(in_use, peak, reserved);
}

extern "C" void diffuse_cuda_reset_peak(diffuse::Backend* backend) { as_cuda(backend)->allocator().reset_peak(); }

extern "C" void diffuse_cuda_versions(int* driver, int* runtime, size_t* cublaslt) {
  if (driver && cudaDriverGetVersion(driver) != cudaSuccess) *driver = 0;
  if (runtime && cudaRuntimeGetVersion(runtime) != cudaSuccess) *runtime = 0;
  if (cublaslt) *cublaslt = cublasLtGetVersion();
}
