// The CPU backend: f32 activations and weights in host memory, kernels over the thread pool.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <new>
#include <string>

#include "cpu/adamw.h"
#include "cpu/attention.h"
#include "cpu/embedding.h"
#include "cpu/geglu.h"
#include "cpu/gemm.h"
#include "cpu/logprobs.h"
#include "cpu/lora_linear.h"
#include "cpu/residual.h"
#include "cpu/rmsnorm.h"
#include "cpu/rope.h"
#include "cpu/sampling.h"
#include "cpu/swiglu.h"
#include "cpu/thread_pool.h"
#include "engine/backend.h"
#include "engine/errors.h"
#include "engine/memory.h"
#include "engine/random.h"

namespace diffuse {
namespace {

// Freed activation blocks, kept for the next request of exactly the same size: a training run
// repeats the same step shape, so its second and later steps reuse the first step's blocks
// instead of mapping and faulting in fresh pages (~25 000 page faults, ~7 % of a SmolLM2 step).
// A request of any other size first gives every kept block back, so the cache never holds
// more than one step's worth, and memory planning counts what it holds as available
// (engine/memory.h reclaimable_bytes). Process-wide: blocks may be freed by one model's buffers
// and reused by another's.
class BlockCache {
 public:
  static BlockCache& instance() {
    static BlockCache* cache = new BlockCache();  // never destroyed: buffers may outlive statics
    return *cache;
  }
  // A 64-byte aligned block of `bytes` (a multiple of 64), or null when out of memory.
  void* take(size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = kept_.find(bytes);
      if (it != kept_.end()) {
        void* p = it->second;
        kept_.erase(it);
        reclaimable_bytes().fetch_sub(bytes);
        return p;
      }
      release_locked();
    }
    return std::aligned_alloc(64, bytes);
  }
  void release() {
    std::lock_guard<std::mutex> lock(mutex_);
    release_locked();
  }
  void give(void* p, size_t bytes) {
    if (bytes > kMaxBlock) {
      std::free(p);
      return;
    }
    std::lock_guard<std::mutex> lock(mutex_);
    if (held_locked() + bytes > kMaxHeld) {
      std::free(p);
      return;
    }
    kept_.emplace(bytes, p);
    reclaimable_bytes().fetch_add(bytes);
  }

 private:
  static constexpr size_t kMaxBlock = size_t{1} << 30, kMaxHeld = size_t{4} << 30;
  size_t held_locked() const { return reclaimable_bytes().load(); }
  void release_locked() {
    for (auto& [bytes, p] : kept_) {
      std::free(p);
      reclaimable_bytes().fetch_sub(bytes);
    }
    kept_.clear();
  }
  std::mutex mutex_;
  std::multimap<size_t, void*> kept_;
};

// 64-byte aligned host memory (a cache line, and a full AVX-512 vector). Activations (`cached`)
// come from and go back to the BlockCache; weights are allocated and freed directly.
class HostBuffer final : public Buffer {
 public:
  HostBuffer(size_t bytes, const char* what, StorageType storage = StorageType::F32, bool cached = false)
      : bytes_(bytes), rounded_((bytes + 63) / 64 * 64), storage_(storage), cached_(cached) {
    data_ = rounded_ == 0 ? nullptr : cached_ ? BlockCache::instance().take(rounded_) : std::aligned_alloc(64, rounded_);
    if (rounded_ != 0 && data_ == nullptr)
      throw Error(ErrorCode::OUT_OF_MEMORY, std::string("out of host memory allocating ") + what +
                                                " (" + std::to_string(bytes >> 20) + " MiB)");
  }
  ~HostBuffer() override {
    if (data_ && cached_) BlockCache::instance().give(data_, rounded_);
    else std::free(data_);
  }
  void* data() override { return data_; }
  size_t bytes() const override { return bytes_; }
  StorageType storage() const override { return storage_; }

 private:
  void* data_;
  size_t bytes_, rounded_;
  StorageType storage_;
  bool cached_;
};

// An upper bound of the packing buffer one thread's GEMM keeps (cpu/gemm.cpp's scratch(),
// which only grows) for M rows of A over K: on the packed path, A packed whole (M rounded up
// to the register tile, K to whole K blocks) and each task's B sliver and widened panel; the
// direct and dot paths' task buffers (at most 24 columns or a 2^16-float row group, plus the
// direct path's two row tiles). Tiles and blocks are the largest of the three kernel sets
// (mr 8, nr 48, kc 256, mc 384, nc 576); tasks are 4 a thread (kTasksPerThread), plus a
// row block each where A has more than 4 a thread.
uint64_t gemm_scratch_bound(int64_t M, int64_t K) {
  if (M <= 0 || K <= 0) return 0;
  constexpr uint64_t mr = 8, nr = 48, kc = 256, mc = 384, nc = 576;
  const uint64_t m = static_cast<uint64_t>(M), k = static_cast<uint64_t>(K);
  const uint64_t kblocks = (k + kc - 1) / kc, tasks = 4 * static_cast<uint64_t>(thread_count()) + (m + mc - 1) / mc;
  const uint64_t apack = (m + mr) * (k + kblocks) + 16;
  const uint64_t task = std::max({kc * (nr + nc) + 32, 24 * (k + 1) + 40, (uint64_t{1} << 16) + 16 * k + 16, 2 * mr * kc + kc * (nr + nc)});
  return sizeof(float) * (apack + tasks * task);
}

const float* f(const void* p) { return static_cast<const float*>(p); }
float* f(void* p) { return static_cast<float*>(p); }

class CpuBackend final : public Backend {
 public:
  // The pool is the process's: each CPU model sets it as it is made, so `threads` left out means
  // all cores (or DIFFUSE_THREADS), not whatever an earlier model asked for.
  explicit CpuBackend(int threads) { set_thread_count(threads); }

  std::string name() const override { return "cpu"; }
  // engine/memory.h: the least of MemAvailable, the cgroup's room and a set memory cap.
  size_t available_memory() override {
    const uint64_t bytes = ::diffuse::available_memory().bytes;
    return bytes > SIZE_MAX ? SIZE_MAX : static_cast<size_t>(bytes);
  }
  // The calling thread's GEMM buffer (the linear layers over K = max_in + rank, the rank-r
  // reductions over K = rows); the pool threads' (the head's chunks and sampling, over the
  // parent or sampled rows); LoRA's per-thread rank-sized buffers; and the largest op's own
  // allocations: attention, log-probabilities, sampling.
  uint64_t kernel_scratch_bytes(const PassShape& s) const override {
    const int64_t T = s.attention.q_rows, r = s.rank, threads = thread_count();
    uint64_t gemm = gemm_scratch_bound(T, s.max_in + r);
    if (r > 0) gemm = std::max(gemm, gemm_scratch_bound(r, T));
    const int64_t head_rows = std::max<int64_t>(s.parents, std::min<int64_t>(s.samples, 64));
    gemm += static_cast<uint64_t>(threads) * gemm_scratch_bound(head_rows, s.hidden);
    const uint64_t lora = r > 0 ? sizeof(float) * static_cast<uint64_t>(threads) * (2 * s.max_in * r + T * r) : 0;
    uint64_t op = attention_scratch_bytes(s.attention, s.max_keys, s.backward);
    op = std::max(op, logprobs_scratch_bytes(s.parents, s.edges, s.vocab, s.hidden, false));
    if (s.backward) op = std::max(op, logprobs_scratch_bytes(s.parents, s.edges, s.vocab, s.hidden, true));
    op = std::max(op, sample_scratch_bytes(s.samples, s.vocab, s.hidden));
    return gemm + lora + op;
  }
  size_t act_elem_size() const override { return sizeof(float); }
  size_t weight_elem_size() const override { return sizeof(float); }

  BufferPtr alloc(size_t bytes, const char* what) override {
    return std::make_unique<HostBuffer>(bytes, what, StorageType::F32, true);
  }
  void upload(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void download(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void copy(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void zero(void* dst, size_t bytes) override { std::memset(dst, 0, bytes); }
  void synchronize() override {}

  BufferPtr make_weight(const float* host, int64_t n, const char* what) override {
    auto buf = std::make_unique<HostBuffer>(n * sizeof(float), what);
    std::memcpy(buf->data(), host, n * sizeof(float));
    return buf;
  }
  // Every storage type: the GEMM, the LM head and the embedding widen rows as they read them.
  bool keeps_stored(StorageType type) const override { return true; }
  BufferPtr make_weight_stored(StorageType type, const void* data, int64_t n, const char* what) override {
    const size_t bytes = static_cast<size_t>(storage_bytes(type, n));
    auto buf = std::make_unique<HostBuffer>(bytes, what, type);
    std::memcpy(buf->data(), data, bytes);
    return buf;
  }
  BufferPtr make_weight_init(const std::string& kind, int64_t n, float std, uint64_t seed,
                             const char* what) override {
    auto buf = std::make_unique<HostBuffer>(n * sizeof(float), what);
    float* w = buf->as<float>();
    if (kind == "normal") {
      parallel_for(n, 1 << 16, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) w[i] = std * normal_from_counter(seed, static_cast<uint64_t>(i));
      });
    } else if (kind == "ones" || kind == "zeros") {
      std::fill(w, w + n, kind == "ones" ? 1.f : 0.f);
    } else {
      throw Error(ErrorCode::INVALID_ARGUMENT, std::string(what) + ": unknown initialiser '" + kind + "' (normal, ones, zeros)");
    }
    return buf;
  }
  void act_from_f32(void* act, const float* host, int64_t n) override {
    std::memcpy(act, host, n * sizeof(float));
  }
  void act_to_f32(float* host, const void* act, int64_t n) override {
    std::memcpy(host, act, n * sizeof(float));
  }

  void embedding_forward(const int32_t* tokens, const void* table, void* out, int64_t rows,
                         int64_t dim) override {
    diffuse::embedding_forward(tokens, f(table), f(out), rows, dim);
  }
  void embedding_lookup(const int32_t* tokens, const LinearWeight& table, void* out, int64_t rows) override {
    diffuse::embedding_forward(tokens, stored_matrix(table), f(out), rows, table.in);
  }
  void rmsnorm_forward(const void* x, const void* w, void* y, float* rstd, int64_t rows,
                       int64_t dim, float eps) override {
    diffuse::rmsnorm_forward(f(x), f(w), f(y), rstd, rows, dim, eps);
  }
  void rmsnorm_backward(const void* dy, const void* x, const void* w, const float* rstd, void* dx,
                        int64_t rows, int64_t dim) override {
    diffuse::rmsnorm_backward(f(dy), f(x), f(w), rstd, f(dx), rows, dim);
  }
  void linear_forward(const void* x, const LinearWeight& W, const LoraParams& lora, void* y,
                      float* u, int64_t rows) override {
    lora_linear_forward(f(x), W, lora, f(y), u, rows);
  }
  void linear_backward(const void* dy, const void* x, const LinearWeight& W,
                       const LoraParams& lora, const float* u, void* dx, bool accumulate,
                       const LoraGrads& grads, int64_t rows) override {
    lora_linear_backward(f(dy), f(x), W, lora, u, f(dx), accumulate, grads, rows);
  }
  void rope_forward(void* x, const int32_t* pos, const float* inv_freq, int64_t rows, const RopeShape& shape) override {
    diffuse::rope_forward(f(x), pos, inv_freq, rows, shape);
  }
  void rope_backward(void* dx, const int32_t* pos, const float* inv_freq, int64_t rows, const RopeShape& shape) override {
    diffuse::rope_backward(f(dx), pos, inv_freq, rows, shape);
  }
  void attention_forward(const void* q, const void* k, const void* v, const int32_t* key_offsets,
                         const int32_t* key_rows, const AttentionShape& shape, void* out,
                         float* lse) override {
    diffuse::attention_forward(f(q), f(k), f(v), key_offsets, key_rows, shape, f(out), lse);
  }
  void attention_backward(const void* dout, const void* q, const void* k, const void* v,
                          const void* out, const float* lse, const int32_t* key_offsets,
                          const int32_t* key_rows, const AttentionShape& shape, void* dq, void* dk,
                          void* dv) override {
    diffuse::attention_backward(f(dout), f(q), f(k), f(v), f(out), lse, key_offsets, key_rows,
                                shape, f(dq), f(dk), f(dv));
  }
  void swiglu_forward(const void* gate, const void* up, void* h, int64_t n) override {
    diffuse::swiglu_forward(f(gate), f(up), f(h), n);
  }
  void swiglu_backward(const void* dh, const void* gate, const void* up, void* dgate, void* dup,
                       int64_t n) override {
    diffuse::swiglu_backward(f(dh), f(gate), f(up), f(dgate), f(dup), n);
  }
  void geglu_forward(const void* gate, const void* up, void* h, int64_t n) override {
    diffuse::geglu_forward(f(gate), f(up), f(h), n);
  }
  void geglu_backward(const void* dh, const void* gate, const void* up, void* dgate, void* dup,
                      int64_t n) override {
    diffuse::geglu_backward(f(dh), f(gate), f(up), f(dgate), f(dup), n);
  }
  void add_inplace(void* y, const void* x, int64_t n) override { diffuse::add_inplace(f(y), f(x), n); }
  void scale_inplace(void* x, float s, int64_t n) override { diffuse::scale_inplace(f(x), s, n); }
  void logprobs_forward(const void* hidden, const LinearWeight& head, const EdgeSet& edges,
                        const Objective& objective, float* edge_logp, float* edge_loss,
                        float* parent_stats, float* edge_stats) override {
    diffuse::logprobs_forward(f(hidden), head.in, head, edges, objective, edge_logp, edge_loss,
                              parent_stats, edge_stats);
  }
  void logprobs_backward(const void* hidden, const LinearWeight& head, const EdgeSet& edges,
                         const Objective& objective, const float* parent_stats,
                         const float* edge_stats, void* dhidden) override {
    diffuse::logprobs_backward(f(hidden), head.in, head, edges, objective, parent_stats,
                               edge_stats, f(dhidden));
  }
  void sample(const void* hidden, const LinearWeight& head, const int32_t* rows,
              const uint64_t* streams, int64_t n, const SampleParams& params, uint64_t step,
              int32_t* tokens, float* logp) override {
    sample_tokens(f(hidden), head.in, head, rows, streams, n, params, step, tokens, logp);
  }
  void adamw_update(float* param, const float* grad, float* m, float* v, int64_t n,
                    const AdamWParams& params) override {
    diffuse::adamw_update(param, grad, m, v, n, params);
  }
  double sum_squares_many(const float* const* xs, const int64_t* ns, int count) override {
    double total = 0;
    for (int i = 0; i < count; ++i) total += diffuse::sum_squares(xs[i], ns[i]);
    return total;
  }
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(int threads) { return std::make_unique<CpuBackend>(threads); }

void release_kept_host_blocks() { BlockCache::instance().release(); }

}  // namespace diffuse
