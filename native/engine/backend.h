// The compute backend: every operation the model graph needs, over memory the backend owns.
//
// The graph (engine/model.cpp) is written once against this interface; the CPU backend
// (cpu/backend_cpu.cpp) and the CUDA backend (cuda/backend_cuda.cu) implement it, op for op,
// with each op's forward and backward in one file per backend (cpu/rmsnorm.cpp <-> cuda/rmsnorm.cu).
//
// Conventions, for every op:
//   * Matrices are row-major. A "row" is one token position. Linear weights are [out x in]
//     (the Hugging Face layout): y = x W^T.
//   * Activation buffers ("act") hold the backend's activation type: f32 on the CPU, bf16 on
//     CUDA. Their element size is act_elem_size(); pointer offsets go through act_offset().
//   * Weight buffers hold the backend's weight type (f32 on the CPU, bf16 on CUDA), made by
//     make_weight() from host f32, or a storage type the backend keeps as it is
//     (keeps_stored(): the CPU keeps bf16 / f16 / GGUF blocks and widens them inside its
//     kernels), made by make_weight_stored(); Buffer::storage() says which.
//   * LoRA parameters and their gradients, optimiser moments, per-row statistics (rstd, lse)
//     and log-probabilities are always f32. Index arrays are int32. All of them live in the
//     backend's memory (device memory on CUDA); copy with upload()/download().
//   * "+=" in a comment means the op accumulates into that output; otherwise it overwrites.
//   * Ops may run asynchronously; synchronize() waits for all of them. download() waits.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>

#include "io/dequant.h"

namespace diffuse {

// A block of backend memory, freed when the owner lets go of it.
class Buffer {
 public:
  virtual ~Buffer() = default;
  virtual void* data() = 0;
  virtual size_t bytes() const = 0;
  template <typename T>
  T* as() { return static_cast<T*>(data()); }
  // For a weight buffer: the storage type it holds, or F32 for the backend's own weight type.
  virtual StorageType storage() const { return StorageType::F32; }
};
using BufferPtr = std::unique_ptr<Buffer>;

// A frozen base linear layer: w is a weight buffer [out x in] in `storage` (its Buffer's
// storage(); F32 is the backend's own weight type); bias is a weight buffer [out] or null.
struct LinearWeight {
  const void* w = nullptr;
  const void* bias = nullptr;
  int64_t out = 0;
  int64_t in = 0;
  StorageType storage = StorageType::F32;
};

// A LoRA adapter on one linear layer: y += scale * (x A^T) B^T with A [rank x in], B [out x rank].
// A null A means the layer has no adapter. All f32, in backend memory.
struct LoraParams {
  const float* A = nullptr;
  const float* B = nullptr;
  int rank = 0;
  float scale = 0.f;  // alpha / rank
  // A and B as Backend::pack_lora made them since they last changed, or null: the kernels then
  // convert the f32 masters themselves, with the same result.
  const void* packed = nullptr;
  bool active() const { return A != nullptr && rank > 0; }
};

// Gradients of one adapter, accumulated (+=). Null when the layer has no adapter.
struct LoraGrads {
  float* dA = nullptr;  // [rank x in]
  float* dB = nullptr;  // [out x rank]
};

// The per-edge objective of the log-probability kernel. For an edge (parent row m, child
// token y, weight W) with logits z = head . h_m:
//   CE:              loss = -W log softmax(z)_y;                dz = W (softmax(z) - e_y)
//   GEM (Li et al.): c_v = q_v w_v with q = softmax(z / beta) and w_v = 1 (linear) or
//                    sigmoid(0.01 (z_v - z_y)) (logsigmoid), both held constant;
//                    loss = W (sum_v c_v z_v - C z_y), C = sum_v c_v;  dz = W (c - C e_y)
enum class ObjectiveKind : int32_t { CE = 0, GEM_LINEAR = 1, GEM_LOGSIGMOID = 2 };
struct Objective {
  ObjectiveKind kind = ObjectiveKind::CE;
  float beta = 0.7f;
};

// Edges of target tries for the log-probability kernel, all arrays in backend memory.
// parent_rows[i] is a row of `hidden` with at least one child edge; edge_parent[e] indexes
// parent_rows; edge_token[e] is the child's token; edge_weight[e] its loss weight W(child).
struct EdgeSet {
  const int32_t* parent_rows = nullptr;
  int32_t n_parents = 0;
  const int32_t* edge_parent = nullptr;
  const int32_t* edge_token = nullptr;
  const float* edge_weight = nullptr;  // may be null for forward-only use
  int32_t n_edges = 0;
  float logit_softcap = 0.f;  // z = cap tanh(head . h / cap) when > 0 (Gemma 2's final soft-cap)
};

// Per-parent statistics saved by logprobs_forward for logprobs_backward: kLogprobStats floats
// per parent (lse of z, lse of z/beta) and kEdgeStats floats per edge (z_y, C).
constexpr int kLogprobStats = 2;
constexpr int kEdgeStats = 2;

// Tree-masked attention. Query row i attends to key rows key_rows[key_offsets[i] ..
// key_offsets[i+1]) of the k/v buffers (its prompt, its ancestors and itself, in any order).
struct AttentionShape {
  int64_t q_rows = 0;    // rows of q / out
  int64_t kv_rows = 0;   // rows of k / v
  int q_heads = 0;       // heads in q
  int kv_heads = 0;      // heads in k / v; q head h reads kv head h / (q_heads / kv_heads)
  int head_dim = 0;
  float scale = 0.f;     // usually 1/sqrt(head_dim)
  float softcap = 0.f;   // > 0: scores s = cap tanh(scale q k^T / cap) (Gemma 2); 0: none
};

// Rotary embedding of rows of `heads` heads, each head_dim wide: its first rot_dim dimensions
// rotate (rot_dim <= head_dim, even; Phi-4-mini rotates 3/4 of each head), the rest pass
// through; cos and sin are multiplied by scale (LongRoPE's attention factor; 1 otherwise).
struct RopeShape {
  int heads = 0;
  int head_dim = 0;
  int rot_dim = 0;
  float scale = 1.f;
};

// The shape of one pass of the model (a forward, a training step, a session's append or
// sample), for Backend::kernel_scratch_bytes.
struct PassShape {
  AttentionShape attention;  // a layer's attention (q_rows: the pass's rows)
  int64_t max_keys = 0;      // the longest key list of a row
  int64_t max_in = 0;        // the widest linear layer input or output (the GEMMs' K)
  int rank = 0;              // LoRA rank; 0 without an adapter
  int64_t parents = 0;       // log-prob parents (0: no log-prob pass)
  int64_t edges = 0;
  int64_t samples = 0;       // rows drawn from (0: no sampling)
  int64_t vocab = 0, hidden = 0;
  bool backward = false;     // the pass runs every op's backward too
};

struct AdamWParams {
  double lr = 5e-5;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-5;
  double weight_decay = 0.01;
  int64_t step = 1;         // 1-based, for bias correction
  double grad_scale = 1.0;  // gradients are multiplied by this first (norm clipping)
};

// The f32 constants of one AdamW update, rounded as torch.optim.AdamW rounds them: each
// hyper-parameter and each 1 - beta cast from double on its own (float(1 - 0.999) is not
// 1 - float(0.999)), the step size and decay factor formed in double. Both backends use them
// in the same elementwise formulas:
//   g = grad * grad_scale;  m += (1 - b1) (g - m)  (torch's lerp);  v = v b2 + (1 - b2) g g
//   p *= decay;  p += -step_size * (m / (sqrt(v) / bias2_sqrt + eps))
struct AdamWConstants {
  float grad_scale, beta1, one_minus_beta1, beta2, one_minus_beta2, eps, step_size, decay, bias2_sqrt;
};
inline AdamWConstants adamw_constants(const AdamWParams& p) {
  const double t = static_cast<double>(p.step);
  const double bias1 = 1.0 - std::pow(p.beta1, t), bias2 = 1.0 - std::pow(p.beta2, t);
  return {static_cast<float>(p.grad_scale), static_cast<float>(p.beta1), static_cast<float>(1.0 - p.beta1),
          static_cast<float>(p.beta2),      static_cast<float>(1.0 - p.beta2), static_cast<float>(p.eps),
          static_cast<float>(p.lr / bias1), static_cast<float>(1.0 - p.lr * p.weight_decay),
          static_cast<float>(std::sqrt(bias2))};
}

struct SampleParams {
  float temperature = 1.f;  // 0 means greedy
  int top_k = 0;            // 0 means no limit
  float top_p = 1.f;        // 1 means no limit
  uint64_t seed = 0;
  float logit_softcap = 0.f;  // set by the model: z = cap tanh(z / cap) when > 0 (Gemma 2)
};

class Backend {
 public:
  virtual ~Backend() = default;

  // ------------------------------------------------------------------ identity and memory
  virtual std::string name() const = 0;        // "cpu" or "cuda:<device name>"
  virtual size_t act_elem_size() const = 0;    // bytes of one activation element
  virtual size_t weight_elem_size() const = 0; // bytes of one weight element
  // Allocates `bytes` of backend memory. Throws diffuse::Error (code OUT_OF_MEMORY) naming
  // `what` when the memory is not there; the backend stays usable.
  virtual BufferPtr alloc(size_t bytes, const char* what) = 0;
  virtual void upload(void* dst, const void* host_src, size_t bytes) = 0;
  virtual void download(void* host_dst, const void* src, size_t bytes) = 0;
  virtual void copy(void* dst, const void* src, size_t bytes) = 0;  // backend to backend
  virtual void zero(void* dst, size_t bytes) = 0;
  virtual void synchronize() = 0;
  // Bytes this backend could still allocate now: the device's free memory plus what its
  // allocator holds cached for reuse (CUDA), the host's available memory (CPU).
  virtual size_t available_memory() = 0;
  // Bytes this backend's kernels allocate on their own during a pass of `shape`, on top of
  // the buffers the model hands them: the most any one op holds while it runs (ops run one
  // at a time) plus what kernels keep cached between calls. An upper estimate from the
  // shapes, for planning; 0 where kernels allocate nothing the planner needs to see.
  virtual uint64_t kernel_scratch_bytes(const PassShape& shape) const { return 0; }

  // Conversions between host f32 and the backend's activation / weight types.
  virtual BufferPtr make_weight(const float* host, int64_t n, const char* what) = 0;
  // A weight buffer made on the backend itself: kind "normal" gives value i =
  // std * normal_from_counter(seed, i) (engine/random.h), "ones" and "zeros" constants. For
  // random-weight models of real size, which never pass through host memory.
  virtual BufferPtr make_weight_init(const std::string& kind, int64_t n, float std, uint64_t seed,
                                     const char* what) = 0;
  // Whether this backend keeps weights of `type` as they are (see make_weight_stored).
  virtual bool keeps_stored(StorageType type) const { return false; }
  // A weight buffer holding n values as stored in `type` (raw blocks, io/dequant.h), whose
  // storage() is `type`. Only for types keeps_stored() accepts.
  virtual BufferPtr make_weight_stored(StorageType type, const void* data, int64_t n, const char* what) {
    throw std::logic_error(std::string(what) + ": this backend does not keep stored weights");
  }
  virtual void act_from_f32(void* act, const float* host, int64_t n) = 0;
  virtual void act_to_f32(float* host, const void* act, int64_t n) = 0;
  void* act_offset(void* act, int64_t elems) const {
    return static_cast<char*>(act) + elems * static_cast<int64_t>(act_elem_size());
  }
  const void* act_offset(const void* act, int64_t elems) const {
    return static_cast<const char*>(act) + elems * static_cast<int64_t>(act_elem_size());
  }

  // ------------------------------------------------------------------ ops
  // out[r] = table[tokens[r]]; table is a weight buffer [vocab x dim].
  virtual void embedding_forward(const int32_t* tokens, const void* table, void* out,
                                 int64_t rows, int64_t dim) = 0;
  // embedding_forward from a table of any storage (table.out rows of table.in values).
  virtual void embedding_lookup(const int32_t* tokens, const LinearWeight& table, void* out, int64_t rows) {
    embedding_forward(tokens, table.w, out, rows, table.in);
  }

  // y = x * rstd * w with rstd = 1/sqrt(mean(x^2) + eps), per row; saves rstd[rows].
  virtual void rmsnorm_forward(const void* x, const void* w, void* y, float* rstd,
                               int64_t rows, int64_t dim, float eps) = 0;
  // dx += d(rmsnorm)/dx . dy  (the weight w is frozen).
  virtual void rmsnorm_backward(const void* dy, const void* x, const void* w, const float* rstd,
                                void* dx, int64_t rows, int64_t dim) = 0;

  // y = x W^T + bias + scale (x A^T) B^T, the LoRA term fused into the base GEMM.
  // When lora is active, u = x A^T [rows x rank] is written for the backward.
  virtual void linear_forward(const void* x, const LinearWeight& W, const LoraParams& lora,
                              void* y, float* u, int64_t rows) = 0;
  // With g = dy B:  dx (= or += when accumulate) dy W + scale g A;
  //                 dA += scale g^T x;  dB += scale dy^T u.  No gradient for W, ever.
  virtual void linear_backward(const void* dy, const void* x, const LinearWeight& W,
                               const LoraParams& lora, const float* u, void* dx, bool accumulate,
                               const LoraGrads& grads, int64_t rows) = 0;

  // Rotary embedding in place on x [rows x heads x head_dim], Hugging Face layout: of each
  // head the first rot_dim dimensions rotate (i pairs with i + rot_dim/2, angle pos[r] *
  // inv_freq[i] for i < rot_dim/2; cos and sin times shape.scale) and the rest pass through.
  virtual void rope_forward(void* x, const int32_t* pos, const float* inv_freq, int64_t rows,
                            const RopeShape& shape) = 0;
  // The transpose: rotates the gradient in place by the negative angle (times the same scale).
  virtual void rope_backward(void* dx, const int32_t* pos, const float* inv_freq, int64_t rows,
                             const RopeShape& shape) = 0;

  // out = softmax(scale q k^T over each row's key list) v, saving lse [q_rows x q_heads].
  virtual void attention_forward(const void* q, const void* k, const void* v,
                                 const int32_t* key_offsets, const int32_t* key_rows,
                                 const AttentionShape& shape, void* out, float* lse) = 0;
  // Writes dq [q_rows x ...]; writes dk, dv [kv_rows x ...] (rows no query reads get zeros).
  virtual void attention_backward(const void* dout, const void* q, const void* k, const void* v,
                                  const void* out, const float* lse, const int32_t* key_offsets,
                                  const int32_t* key_rows, const AttentionShape& shape, void* dq,
                                  void* dk, void* dv) = 0;

  // h = silu(gate) * up, elementwise over n.
  virtual void swiglu_forward(const void* gate, const void* up, void* h, int64_t n) = 0;
  virtual void swiglu_backward(const void* dh, const void* gate, const void* up, void* dgate,
                               void* dup, int64_t n) = 0;

  // h = gelu_tanh(gate) * up, elementwise over n (GeGLU, Gemma's MLP), with
  // gelu_tanh(x) = x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
  virtual void geglu_forward(const void* gate, const void* up, void* h, int64_t n) = 0;
  virtual void geglu_backward(const void* dh, const void* gate, const void* up, void* dgate,
                              void* dup, int64_t n) = 0;

  // y += x, elementwise over n activations.
  virtual void add_inplace(void* y, const void* x, int64_t n) = 0;
  // x *= s, elementwise over n activations, with s first rounded to the activation type (as
  // transformers casts Gemma's embedding normaliser to the hidden states' dtype).
  virtual void scale_inplace(void* x, float s, int64_t n) = 0;

  // Edge log-probabilities through the LM head `head` [vocab x dim] from hidden [rows x dim],
  // in vocabulary chunks, never materialising rows x vocab. Writes edge_logp[e] =
  // log softmax(z_parent)[token] and edge_loss[e] (the objective's per-edge loss, before the
  // weight W), and saves parent_stats [n_parents x kLogprobStats] and edge_stats
  // [n_edges x kEdgeStats] for the backward.
  virtual void logprobs_forward(const void* hidden, const LinearWeight& head, const EdgeSet& edges,
                                const Objective& objective, float* edge_logp, float* edge_loss,
                                float* parent_stats, float* edge_stats) = 0;
  // dhidden[parent row] += head^T dz, recomputing z chunk by chunk (see Objective for dz).
  virtual void logprobs_backward(const void* hidden, const LinearWeight& head, const EdgeSet& edges,
                                 const Objective& objective, const float* parent_stats,
                                 const float* edge_stats, void* dhidden) = 0;

  // Next tokens from full-vocabulary logits of rows[i] of hidden (final-normed), one draw per
  // i from stream streams[i] at counter `step` (so draws are reproducible and independent of
  // batching). Writes tokens[i] and logp[i] = log softmax(z)[token] at temperature 1.
  virtual void sample(const void* hidden, const LinearWeight& head, const int32_t* rows,
                      const uint64_t* streams, int64_t n, const SampleParams& params,
                      uint64_t step, int32_t* tokens, float* logp) = 0;

  // AdamW (decoupled weight decay, bias-corrected) on n f32 parameters.
  virtual void adamw_update(float* param, const float* grad, float* m, float* v, int64_t n,
                            const AdamWParams& params) = 0;
  // The sum over tensors i < count of the squares of xs[i][0 .. ns[i]), in double: the global
  // gradient norm of many tensors with one wait for the result.
  virtual double sum_squares_many(const float* const* xs, const int64_t* ns, int count) = 0;
  double sum_squares(const float* x, int64_t n) { return sum_squares_many(&x, &n, 1); }

  // The LoRA factors A [rank x in] and B [out x rank] in the form this backend's linear kernels
  // read, made into `packed` (allocated here when null) after A or B change; the adapter hands
  // it on in LoraParams::packed. The CUDA backend rounds them to bf16 and pads them here once
  // per optimiser step instead of in every linear call. The CPU backend reads the f32 masters
  // and leaves `packed` null.
  virtual void pack_lora(const float* A, const float* B, int64_t in, int64_t out, int rank, BufferPtr& packed) {}
};

// The CPU backend, always built. threads <= 0 means all hardware threads.
std::unique_ptr<Backend> make_cpu_backend(int threads);
// Frees the activation blocks the CPU backend keeps for reuse (reclaimable_bytes() drops to 0).
void release_kept_host_blocks();

}  // namespace diffuse
